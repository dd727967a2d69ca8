"""A LoRA linear layer, y = x @ W.T + b + s * (x @ A.T) @ B.T, as one autograd function.

PEFT computes the same thing as separate modules: the base layer, then lora_A, lora_B, a scaling multiply
and an add, each a full-width (tokens x out_features) tensor written and read again; and when the adapter
weights are float32 on a bf16 base (PEFT's default), the input is first copied to float32, a copy autograd
keeps for backward in every adapted layer. Here the output is one GEMM plus one in-place rank-r GEMM update,
everything runs in the input's (compute) dtype, and backward keeps only x (which the base layer's backward
needs anyway) and the rank-r product x @ A.T. For dropout 0 and no DoRA only; other layers keep PEFT's
forward.

A quantized base is handled through `dequantize`: a callback that returns the dense weight, called in
forward and again in backward so the dense copy is never kept between them. PEFT's bitsandbytes LoRA layers
(QLoRA: `lora.bnb.Linear4bit` on NF4/FP4, `lora.bnb.Linear8bitLt` on int8) are fused this way, the 4-bit
weight always read in bitsandbytes' plain layout (see `plain_4bit_layout`). Without autocast, a 4-bit layer
computes in its own compute dtype (bnb_4bit_compute_dtype), as bitsandbytes' base GEMM does; unlike PEFT, which
then runs the LoRA product in the adapter's float32, the fused layer runs it in that dtype too.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
from torch import Tensor


def _compute_dtype(x: Tensor, layer_dtype: torch.dtype | None = None) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type) and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
        return torch.get_autocast_dtype(x.device.type)
    return layer_dtype if layer_dtype is not None and x.is_floating_point() else x.dtype


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        lora_a: Tensor,
        lora_b: Tensor,
        scaling: float,
        dequantize: Callable[[Tensor], Tensor] | None,
        compute_dtype: torch.dtype | None,
    ):
        dt = _compute_dtype(x, compute_dtype)
        w = (dequantize(weight) if dequantize is not None else weight).to(dt)
        a, b = lora_a.to(dt), lora_b.to(dt)
        x2 = x.reshape(-1, x.shape[-1]).to(dt)
        xa = x2 @ a.t()  # (tokens, r): the only new activation kept
        out = torch.nn.functional.linear(x2, w, bias.to(dt) if bias is not None else None)
        out.addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(x2, xa, weight, bias, lora_a, lora_b)
        ctx.scaling, ctx.dequantize, ctx.dt, ctx.x_dtype = scaling, dequantize, dt, x.dtype
        ctx.x_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x2, xa, weight, bias, lora_a, lora_b = ctx.saved_tensors
        s, dt = ctx.scaling, ctx.dt
        g = grad_out.reshape(-1, grad_out.shape[-1]).to(dt)
        a, b = lora_a.to(dt), lora_b.to(dt)
        gb = (g @ b).mul_(s)  # (tokens, r) gradient reaching x @ A.T
        dx = dw = dbias = da = db = None
        if ctx.needs_input_grad[0]:
            w = (ctx.dequantize(weight) if ctx.dequantize is not None else weight).to(dt)
            dx = (g @ w).addmm_(gb, a).to(ctx.x_dtype).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            dw = (g.t() @ x2).to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            dbias = g.sum(0).to(bias.dtype)
        if ctx.needs_input_grad[3]:
            da = (gb.t() @ x2).to(lora_a.dtype)
        if ctx.needs_input_grad[4]:
            db = (g.t() @ xa).mul_(s).to(lora_b.dtype)
        return dx, dw, dbias, da, db, None, None, None


def lora_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    lora_a: Tensor,
    lora_b: Tensor,
    scaling: float,
    dequantize: Callable[[Tensor], Tensor] | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """`x @ W.T + bias + scaling * (x @ A.T) @ B.T` with a lean backward.

    Args:
        x: (..., in) input. weight: (out, in) base weight (or a quantized one with `dequantize`).
        bias: (out,) or None. lora_a: (r, in). lora_b: (out, r). scaling: alpha / r (or rsLoRA's).
        dequantize: returns the dense (out, in) weight from `weight`; for quantized bases.
        compute_dtype: the layer's own compute dtype (a bitsandbytes 4-bit layer's `compute_dtype`), used
            when autocast is off.
    Returns (..., out) in the compute dtype (the autocast dtype when autocast is on, else `compute_dtype`
    or x's dtype)."""
    return _LoraLinear.apply(x, weight, bias, lora_a, lora_b, float(scaling), dequantize, compute_dtype)


# ---- swapping it into PEFT's LoRA layers ----------------------------------------------------------------
def _dequantize_4bit(weight) -> Tensor:
    import bitsandbytes as bnb

    return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)


def _dequantizer_8bit(base: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    import bitsandbytes as bnb

    def dequantize(weight) -> Tensor:
        # Int8Params: int8 rows and one absmax scale per row (SCB, on the layer's state once it has run);
        # w = int8 * SCB / 127
        scb = getattr(base.state, "SCB", None)
        scb = weight.SCB if scb is None else scb
        return bnb.functional.int8_vectorwise_dequant(weight.data, scb.to(weight.device))

    return dequantize


def plain_4bit_layout(base: torch.nn.Module) -> None:
    """Keep a fused 4-bit base in bitsandbytes' plain layout, the only one `dequantize_4bit` reads.

    On AVX512-BF16 CPUs, Linear4bit.forward repacks its weight in place for a CPU kernel the first time it
    runs in eval mode without grad (PEFT's own forward does that under `disable_adapter()`). The repacked
    form is lossy (absmax rounded to bf16, double quant undone) and the inverse is best effort, so
    fusing switches the repacking off for the layer; a weight that was already repacked before fusing is
    turned back, in place, the way bitsandbytes itself does before saving or moving to a GPU."""
    if getattr(base, "support_avx512bf16_for_cpu", False):
        base.support_avx512bf16_for_cpu = False
    w = base.weight
    if getattr(w.quant_state, "packing_format_for_cpu", False):
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

        w.data, w.quant_state = _convert_weight_packed_for_cpu_inverse(w.data, w.quant_state)


def _dequantizer(base: torch.nn.Module) -> tuple[Tensor, Callable | None] | None:
    """(weight, dequantize callback) for a base layer we know, None for one we do not."""
    if type(base) is torch.nn.Linear:
        return base.weight, None
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    if isinstance(base, bnb.nn.Linear4bit) and getattr(base.weight, "quant_state", None) is not None:
        return base.weight, _dequantize_4bit
    if (
        isinstance(base, bnb.nn.Linear8bitLt)
        and base.weight.dtype == torch.int8
        and (getattr(base.weight, "SCB", None) is not None or getattr(base.state, "SCB", None) is not None)
    ):
        return base.weight, _dequantizer_8bit(base)
    return None


def _lora_layer_types() -> tuple[type, ...]:
    """PEFT's LoRA Linear classes this module can fuse: the plain one and the bitsandbytes 4-/8-bit ones
    (QLoRA); these are separate classes in PEFT, not subclasses of lora.layer.Linear."""
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:
        return ()
    types_: list[type] = [Linear]
    try:
        from peft.tuners.lora import bnb as peft_bnb
    except ImportError:
        return tuple(types_)
    types_ += [getattr(peft_bnb, n) for n in ("Linear4bit", "Linear8bitLt") if hasattr(peft_bnb, n)]
    return tuple(types_)


def fusable(layer) -> str | None:
    """Why this PEFT LoRA layer cannot use the fused path (None: it can)."""
    name = layer.active_adapters[0] if len(layer.active_adapters) == 1 else None
    if name is None:
        return "more than one active adapter"
    if name in getattr(layer, "lora_variant", {}) or getattr(layer, "use_dora", {}).get(name, False):
        return "DoRA / a LoRA variant"
    if not isinstance(layer.lora_dropout[name], torch.nn.Identity):
        return "LoRA dropout > 0"
    if getattr(layer, "fan_in_fan_out", False):
        return "fan_in_fan_out weights"
    if _dequantizer(layer.get_base_layer()) is None:
        return f"base layer {type(layer.get_base_layer()).__name__}"
    return None


def fuse_lora_layers(model: torch.nn.Module) -> tuple[int, int]:
    """Give every PEFT LoRA Linear layer in `model` (full-precision or a bitsandbytes 4-/8-bit base) that
    `fusable` accepts the fused forward.

    The swapped forward checks PEFT's state on every call and defers to PEFT's own forward when adapters
    are disabled (`with model.disable_adapter()`), merged, or called with per-row `adapter_names`, so
    evaluation of the base model and merging work as before. Returns (fused layers, LoRA layers)."""
    lora_types = _lora_layer_types()
    if not lora_types:
        return 0, 0
    fused = total = 0
    for module in model.modules():
        if not isinstance(module, lora_types):
            continue
        total += 1
        if fusable(module) is not None or "_tf_peft_forward" in module.__dict__:
            fused += "_tf_peft_forward" in module.__dict__
            continue
        if _dequantizer(module.get_base_layer())[1] is _dequantize_4bit:
            plain_4bit_layout(module.get_base_layer())
        module._tf_peft_forward = module.forward
        module.forward = types.MethodType(_fused_forward, module)
        fused += 1
    return fused, total


def _fused_forward(self, x: Tensor, *args, **kwargs) -> Tensor:
    name = self.active_adapters[0] if len(self.active_adapters) == 1 else None
    if (
        args
        or kwargs
        or self.disable_adapters
        or self.merged
        or name is None
        or name not in self.lora_A
        or fusable(self) is not None
    ):
        return self._tf_peft_forward(x, *args, **kwargs)
    base = self.get_base_layer()
    weight, dequantize = _dequantizer(base)
    if dequantize is _dequantize_4bit:
        plain_4bit_layout(base)
        weight = base.weight
    # a 4-bit base runs its GEMM in its compute dtype (bnb_4bit_compute_dtype, e.g. bf16 under fp32 activations
    # after prepare_model_for_kbit_training), as bitsandbytes does; the fused layer (LoRA included) does the same
    compute_dtype = getattr(base, "compute_dtype", None) if dequantize is _dequantize_4bit else None
    out = lora_linear(
        x,
        weight,
        base.bias,
        self.lora_A[name].weight,
        self.lora_B[name].weight,
        self.scaling[name],
        dequantize,
        compute_dtype,
    )
    return out.to(x.dtype) if not torch.is_autocast_enabled(x.device.type) else out
