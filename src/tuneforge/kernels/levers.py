"""One speed lever (a `train.*` switch with an automatic default) and how an `auto | true | false` switch
resolves. Lives at the bottom layer so that both the training engine (`training/speed.py`, which switches
on the engine-wide levers) and the methods (which offer their own fast paths through
`Method.speed_levers`, for example LoRA's fused layers) can build levers the same way."""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.errors import ConfigError

#: why a CUDA-only lever stays off on this machine
NO_GPU = "no CUDA device (it pays off on GPUs)"


@dataclass
class Lever:
    key: str
    on: bool
    note: str


def wanted(value, key: str, supported: bool, why_not: str) -> tuple[bool, str]:
    """Resolve one `auto | true | false` switch: (on, note). `true` where it is not supported raises."""
    if value is False:
        return False, f"off (train.{key}=false)"
    if supported:
        return True, "on" + (" (auto)" if value == "auto" else "")
    if value is True:
        raise ConfigError(f"train.{key}: true, but {why_not}; set it to auto or false")
    return False, f"off: {why_not}"
