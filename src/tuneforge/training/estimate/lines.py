"""What the engine prints from the estimate: the start-of-run lines (the estimated peak, and whether it fits this
device) and the one line of a CUDA out-of-memory error. Neither ever raises."""

from __future__ import annotations

from tuneforge.config.schema import RunConfig
from tuneforge.errors import first_line
from tuneforge.training.estimate.advice import suggestions
from tuneforge.training.estimate.core import estimate_memory
from tuneforge.training.estimate.result import gib


def start_of_run_lines(cfg: RunConfig, nproc: int = 1, strategy: str = "ddp") -> list[str]:
    """2-4 short lines for the start of a run: the estimated peak and its parts, and whether it fits this device.
    `nproc` / `strategy` (one of STRATEGIES): how a multi-process run spreads the model. Never raises (an estimate
    that cannot be made is one line saying why)."""
    try:
        import torch

        cuda = torch.cuda.is_available()
        device = "cuda" if cuda else "cpu"
        bf16 = bool(cuda and torch.cuda.is_bf16_supported())
        est = estimate_memory(cfg, nproc=nproc, strategy=strategy, device=device, bf16=bf16)
        lines = [
            f"tuneforge: estimated peak memory {gib(est.total)} per device: weights {gib(est.weights)}, "
            f"gradients {gib(est.gradients)}, optimizer {gib(est.optimizer)}, activations "
            f"{gib(est.activations)}, logits {gib(est.logits)}, overhead {gib(est.overhead)}"
            + (f", generation {gib(est.generation)} (not at once with activations)" if est.generation else "")
        ]
        if cuda:
            total = torch.cuda.get_device_properties(0).total_memory
            where = torch.cuda.get_device_name(0)
        else:
            total = _ram_bytes()
            where = "RAM"
        if total:
            if est.total <= total:
                lines.append(f"tuneforge: fits in {gib(total)} ({where})")
            else:
                tips = suggestions(cfg, est, total, nproc, strategy, device=device, bf16=bf16, limit=2)
                lines.append(
                    f"tuneforge: may not fit in {gib(total)} ({where})" + (f"; try {'; '.join(tips)}" if tips else "")
                )
        return lines
    except Exception as exc:
        return [f"tuneforge: memory estimate unavailable ({first_line(exc, 120, with_type=True)})"]


def _ram_bytes() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def oom_message(cfg: RunConfig, device_total_bytes: int | None) -> str:
    """One line for a CUDA out-of-memory error during training:
    'CUDA out of memory (estimated peak X GiB of Y GiB): try <suggestion>; <suggestion>'. Never raises."""
    try:
        import torch

        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or not torch.cuda.is_available()
        if device_total_bytes is None and torch.cuda.is_available():
            device_total_bytes = torch.cuda.get_device_properties(0).total_memory
        est = estimate_memory(cfg, device="cuda", bf16=bf16)
        of = f" of {gib(device_total_bytes)}" if device_total_bytes else ""
        budget = device_total_bytes if device_total_bytes else int(est.total * 0.7)
        tips = suggestions(cfg, est, min(budget, est.total - 1), device="cuda", bf16=bf16, limit=2)
        if not tips:
            tips = [
                "train.gradient_checkpointing=true",
                "a smaller train.batch_size with more train.gradient_accumulation_steps",
            ]
        return f"CUDA out of memory (estimated peak {gib(est.total)}{of}): try {'; '.join(tips)}"
    except Exception:
        return (
            "CUDA out of memory: try train.gradient_checkpointing=true; a smaller train.batch_size with more "
            "train.gradient_accumulation_steps; train.optimizer=adamw_8bit"
        )
