"""What to change when a run does not fit: config overrides (and more devices) tried cheapest first, each
re-estimated on a copy of the config. The run's method offers its own lighter variants through the method
contract (`Method.lighter_variants`), and a switch to another method keeps what that method says it keeps
(`Method.config_for_switch`)."""

from __future__ import annotations

import importlib.util

from tuneforge.config.schema import RunConfig
from tuneforge.errors import TuneforgeError
from tuneforge.registry import METHODS
from tuneforge.training.estimate.core import estimate_memory
from tuneforge.training.estimate.result import GIB, Estimate, gib

#: the override that switches a run to another method; its keys then come from `Method.config_for_switch`
_SWITCH = "method.name="


def _with(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """A copy of `cfg` with `key=value` overrides, validated like a config file (no machine checks)."""
    from tuneforge.config import apply_overrides, validate_config

    raw = cfg.model_dump(mode="json")
    switch = [o for o in overrides if o.startswith(_SWITCH)]
    if switch:
        raw["method"] = METHODS.get(switch[0].removeprefix(_SWITCH)).config_for_switch(cfg.method)
        overrides = [o for o in overrides if o not in switch]
    return validate_config(apply_overrides(raw, overrides), environment=False)


def _candidates(cfg: RunConfig, device: str) -> list[list[str]]:
    """Changes to try, cheapest first (none changes what is learned; the 8-bit optimizer and the method's lighter
    variants, last, change the numerics)."""
    t = cfg.train
    out: list[list[str]] = []
    if not t.gradient_checkpointing:
        out.append(["train.gradient_checkpointing=true"])
    if t.chunked_loss is not True and not (t.chunked_loss == "auto" and device == "cuda"):
        out.append(["train.chunked_loss=true"])
    b = t.batch_size
    while b > 1:
        b //= 2
        k = -(-t.batch_size // b) * t.gradient_accumulation_steps
        out.append([f"train.batch_size={b}", f"train.gradient_accumulation_steps={k}"])
    if "8bit" not in t.optimizer and importlib.util.find_spec("bitsandbytes") is not None:
        out.append(["train.optimizer=adamw_8bit"])
    out += METHODS.get(cfg.method.name).lighter_variants(cfg, device)
    return out


def suggestions(
    cfg: RunConfig,
    est: Estimate,
    budget_bytes: int,
    nproc: int = 1,
    strategy: str = "ddp",
    *,
    device: str = "cuda",
    bf16: bool = True,
    limit: int = 4,
    best_effort: bool = False,
) -> list[str]:
    """The cheapest changes that make `cfg` fit in `budget_bytes` per device, each re-estimated on a copy of `cfg`:
    config override lines such as 'train.gradient_checkpointing=true (-12.3 GiB)', or '--nproc 4 --strategy fsdp'.
    When no single change fits, the smallest combination of them that does; when nothing found fits, [] (or with
    `best_effort`, the changes that save most, each saying how far over it stays)."""
    out: list[str] = []
    singles: list[tuple[list[str], int]] = []
    for change in _candidates(cfg, device):
        try:
            e = estimate_memory(_with(cfg, change), nproc, strategy, device, bf16=bf16)
        except TuneforgeError:
            continue
        if e.total < est.total:
            singles.append((change, e.total))
        if e.total <= budget_bytes:
            if change[0].startswith("train.batch_size") and any(s.startswith("train.batch_size") for s in out):
                continue
            out.append(f"{' '.join(change)} (-{(est.total - e.total) / GIB:.1f} GiB)")
        if len(out) >= limit:
            return out
    if not out:  # combine the helpful changes in order until it fits
        combo: list[str] = []
        for change, _ in singles:
            if change[0].startswith("train.batch_size") and any(c.startswith("train.batch_size") for c in combo):
                continue
            trial = combo + change
            try:
                e = estimate_memory(_with(cfg, trial), nproc, strategy, device, bf16=bf16)
            except TuneforgeError:
                continue
            if e.total < est.total:
                combo = trial
            if e.total <= budget_bytes:
                out.append(f"{' '.join(combo)} (-{(est.total - e.total) / GIB:.1f} GiB)")
                break
    if device == "cuda":
        for n in (2, 4, 8, 16, 32, 64):
            if n <= nproc:
                continue
            e = estimate_memory(cfg, n, "fsdp", device, bf16=bf16)
            if e.total <= budget_bytes:
                out.append(f"--nproc {n} --strategy fsdp (-{(est.total - e.total) / GIB:.1f} GiB per device)")
                break
    if not out and best_effort:
        for change, total in sorted(singles, key=lambda x: x[1])[:limit]:
            out.append(
                f"{' '.join(change)} (-{(est.total - total) / GIB:.1f} GiB; still {gib(total - budget_bytes)} over)"
            )
    return out[: limit + 1]
