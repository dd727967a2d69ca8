"""Frozen weights cast once for a stretch of many forward passes (generation inside training) under autocast.

Autocast caches the low-precision copy of a weight only for leaf tensors that require grad. The frozen base of an
adapter method requires none, so each of its linear layers is cast again on every forward pass. When generating,
that is every new token. `frozen_linears_cast(model)` casts them once on entry and puts the originals back on exit.
The results are those autocast would compute anyway: it would cast the same weights to the same dtype. The copies
live only inside the block. `cast_linears` does the casting; bf16 inference on a CPU (inference.precision) keeps
its copies for good."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def cast_linears(model: nn.Module, dtype: torch.dtype, frozen_only: bool) -> list[tuple[nn.Module, str, nn.Parameter]]:
    """Give each nn.Linear of `model` whose floating weight is wider than `dtype` a weight and bias cast to `dtype`
    (only the parameters that do not train, with `frozen_only`). A parameter shared by several modules gets one
    copy; a module that shares it but is no nn.Linear (tied input embeddings) keeps the original. Quantized layers
    (integer weights) are left alone. Returns (module, name, original parameter) of each replacement, to put back."""
    copies: dict[int, nn.Parameter] = {}
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, nn.Linear) or not isinstance(weight, torch.Tensor):
            continue
        if not weight.is_floating_point() or weight.dtype.itemsize <= dtype.itemsize:
            continue
        for name in ("weight", "bias"):
            param = getattr(module, name)
            if param is None or (frozen_only and param.requires_grad):
                continue
            if id(param) not in copies:
                copies[id(param)] = nn.Parameter(param.detach().to(dtype), requires_grad=False)
            swapped.append((module, name, param))
            setattr(module, name, copies[id(param)])
    return swapped


@contextlib.contextmanager
def frozen_linears_cast(model: nn.Module) -> Iterator[int]:
    """Within the block, every nn.Linear of `model` whose weight is frozen and in a wider dtype than the active
    autocast dtype computes with a copy cast to it. Nothing changes outside autocast. Yields how many layers were
    swapped."""
    first = next(model.parameters(), None)
    dtype = _autocast_dtype(first.device.type) if first is not None else None
    swapped = cast_linears(model, dtype, frozen_only=True) if dtype is not None else []
    try:
        yield len({id(m) for m, _, _ in swapped})
    finally:
        for module, name, param in reversed(swapped):
            setattr(module, name, param)
