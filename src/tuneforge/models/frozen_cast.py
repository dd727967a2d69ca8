"""Frozen weights cast once for a stretch of many forward passes (generation inside training) under autocast.

Autocast caches the low-precision copy of a weight only for leaf tensors that require grad. The frozen base of an
adapter method requires none, so each of its linear layers is cast again on every forward pass. When generating,
that is every new token. `frozen_linears_cast(model)` casts them once on entry and puts the originals back on exit.
The results are those autocast would compute anyway: it would cast the same weights to the same dtype. The copies
live only inside the block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


@contextlib.contextmanager
def frozen_linears_cast(model: nn.Module) -> Iterator[int]:
    """Within the block, every nn.Linear of `model` whose weight is frozen and in a wider dtype than the active
    autocast dtype computes with a copy cast to it. Nothing changes outside autocast. Yields how many layers were
    swapped."""
    params = [p for p in model.parameters()]
    if not params:
        yield 0
        return
    dtype = _autocast_dtype(params[0].device.type)
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    if dtype is not None:
        copies: dict[int, nn.Parameter] = {}
        for module in model.modules():
            if type(module) is not nn.Linear:  # plain layers only: quantized or adapted ones cast themselves
                continue
            weight = module.weight
            if weight.requires_grad or not weight.is_floating_point() or weight.dtype.itemsize <= dtype.itemsize:
                continue
            for name in ("weight", "bias"):
                param = getattr(module, name)
                if param is None or param.requires_grad:
                    continue
                key = id(param)
                if key not in copies:
                    copies[key] = nn.Parameter(param.detach().to(dtype), requires_grad=False)
                swapped.append((module, name, param))
                setattr(module, name, copies[key])
    try:
        yield len({id(m) for m, _, _ in swapped})
    finally:
        for module, name, param in reversed(swapped):
            setattr(module, name, param)
