"""The memory an estimate is held against: a size given as text (`--memory 24GiB`), a catalogued GPU (`--gpu t4`),
and the one line saying whether an estimate fits."""

from __future__ import annotations

import re

from tuneforge.errors import ConfigError
from tuneforge.training.estimate.result import Estimate, gib

_UNITS = {
    "": None,
    "b": 1,
    "k": 2**10,
    "kb": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mb": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gb": 2**30,
    "gib": 2**30,
    "t": 2**40,
    "tb": 2**40,
    "tib": 2**40,
}


def parse_memory(text: str) -> int:
    """'24GiB', '24GB', '80G', '512MiB', '1.5TiB' -> bytes. GPU memory is quoted in binary units, so GB and G mean
    GiB here. ConfigError for anything else (a number needs a unit)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS or _UNITS[unit] is None:
        raise ConfigError(f"--memory: '{text}' is not a size; give a number with a unit, e.g. 24GiB, 80G or 512MiB")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"--memory: '{text}' must be more than 0")
    return value


def gpu_memory(name: str) -> int:
    """Total memory of a catalogued GPU in bytes (h100-80gb, h200, a100-40gb, a100-80gb, 4090, 3090, l4, t4, a10g,
    v100-32gb, ...). ConfigError naming the closest for an unknown name."""
    from tuneforge.training.gpus import find_gpu

    return find_gpu(name).bytes


def fits_line(est: Estimate, budget: int, label: str) -> str:
    """'fits in 15.0 GiB (t4): 3.2 GiB to spare' or 'does not fit in ...: 2.1 GiB over'."""
    if est.total <= budget:
        return f"fits in {gib(budget)} ({label}): {gib(budget - est.total)} to spare"
    return f"does not fit in {gib(budget)} ({label}): {gib(est.total - budget)} over"
