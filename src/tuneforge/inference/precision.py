"""The precision a loaded run computes in on a CPU: bf16 autocast on a CPU with bf16 units (AVX512-BF16 / AMX) where
the task measured it faster at equal outputs, fp32 elsewhere. The linear layers' weights are stored in bf16 (what
autocast would cast them to on every call), everything else stays fp32; the forward runs under autocast, and the
logits come back in fp32.

Asked for by `load_run(..., precision=)`, by `--precision` of predict / eval / chat / generate / serve, or by the
`TUNEFORGE_PRECISION` environment variable (which the CLI flag sets, so serve's workers see it too):
`auto` (the task's measured default), `fp32` or `bf16`. On a GPU a run keeps the dtype it was loaded in.
"""

from __future__ import annotations

import functools
import os

import torch

from tuneforge.errors import ConfigError
from tuneforge.models.frozen_cast import cast_linears

ENV = "TUNEFORGE_PRECISION"
CHOICES = ("auto", "fp32", "bf16")


def asked_precision(precision: str | None = None) -> str:
    """`precision`, else the environment's TUNEFORGE_PRECISION, else `auto`; ConfigError for another value."""
    value = (precision or os.environ.get(ENV) or "auto").strip().lower()
    if value not in CHOICES:
        raise ConfigError(f"precision: '{value}' is not one of {', '.join(CHOICES)}")
    return value


def resolve(precision: str | None, device: str, task_default: bool, width: int | None) -> str:
    """fp32 or bf16 for a run on `device`. `task_default`: whether the task measured bf16 faster at equal outputs
    on CPU (`InferenceHooks.cpu_bf16`); `width`: the model's hidden size (narrow models stay fp32 under auto, as in
    training). Raises ConfigError for bf16 on a CPU without bf16 units."""
    from tuneforge.config.environment import auto_cpu_bf16, cpu_bf16

    asked = asked_precision(precision)
    if device != "cpu" or asked == "fp32":
        return "fp32"
    if asked == "bf16":
        if not cpu_bf16():
            raise ConfigError("precision: 'bf16' needs a CPU with bf16 units (AVX512-BF16 or AMX); use fp32 or auto")
        return "bf16"
    return "bf16" if task_default and auto_cpu_bf16(width) else "fp32"


def _float_logits(out):
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor) and logits.dtype == torch.bfloat16:
        out.logits = logits.float()
    elif isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16:
        return out.float()
    return out


def autocast_on_cpu(model) -> None:
    """Run `model`'s forward (the innermost transformers model's, so PEFT wrappers and `generate` go through it)
    under CPU bf16 autocast, with its linear layers stored in bf16 and floating logits returned in fp32.
    Idempotent."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(inner.forward, "_tuneforge_bf16", False):
        return
    # the linear layers stored in bf16 once: autocast would cast them on every forward (every generated token),
    # its cache living only as long as one autocast region; the results are the same
    cast_linears(model, torch.bfloat16, frozen_only=False)
    forward = inner.forward

    @functools.wraps(forward)
    def bf16_forward(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _float_logits(out)

    bf16_forward._tuneforge_bf16 = True
    inner.forward = bf16_forward


def computes_in_bf16(model) -> bool:
    """Whether `autocast_on_cpu` was applied to `model`."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(inner.forward, "_tuneforge_bf16", False))
