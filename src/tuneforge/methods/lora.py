"""LoRA through PEFT: low-rank updates on chosen linear layers; the task head trains in full and is saved
with the adapter (PEFT's modules_to_save), so the saved adapter loads with stock PEFT.

QLoRA is this method on a quantized base (`quantization: nf4`), not a separate path: `load_kwargs` asks for
a bitsandbytes base, `prepare` runs PEFT's prepare_model_for_kbit_training, and `merge` adds the update to
the *dequantized* base in full precision, so the merged model computes what the trained model computed.
`qlora` is registered as a name for this method with 4-bit NF4 + double quantization as defaults."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from tuneforge.config.schema import MethodConfig, RunConfig
from tuneforge.errors import ConfigError, MethodError, first_line
from tuneforge.kernels.levers import NO_GPU, Lever, wanted
from tuneforge.methods.base import METHODS, MethodContext
from tuneforge.methods.peft_common import PeftMethod, new_token_training, peft_task_type

#: modules kept out of quantization when the caller does not say which (`load_kwargs` without a context, or a
#: task that names none): the union of the built-in tasks' heads, as before tasks named their own
#: (MethodContext.full_precision_modules). `prepare` checks that the real head was kept in full precision.
HEAD_NAMES = ["classifier", "score", "lm_head", "qa_outputs", "pre_classifier"]


def full_precision_names(ctx: MethodContext | None) -> list[str]:
    """Module names to keep out of quantization: the task's (ctx.full_precision_modules), else HEAD_NAMES."""
    names = list(ctx.full_precision_modules) if ctx is not None else []
    return names or list(HEAD_NAMES)


class LoraConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    default_learning_rate: ClassVar[float] = 1e-3
    r: int = Field(8, ge=1, le=4096, description="Rank of the low-rank update.")
    alpha: float | None = Field(None, gt=0, description="Scaling numerator (update scaled by alpha/r); default 2*r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description=(
            "Layers that get LoRA: `all-linear` (every linear layer but the head; in a convolutional network without "
            "linear layers, every convolution that is not grouped), a list of module-name suffixes (for example "
            "[query, value]), or one regular expression matched against full module names."
        ),
    )
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r) (rsLoRA).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA): learns magnitude and direction.")
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default",
        description=(
            "Initialisation of the LoRA matrices, as PEFT offers them (`default`: B=0, A Kaiming-uniform; "
            "`gaussian`: A Gaussian; `pissa` / `olora`: from the principal directions / a QR of the base weight, "
            "which then changes the base; full-precision bases only)."
        ),
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    lora_plus_ratio: float | None = Field(
        None,
        gt=0,
        description=("LoRA+: learning rate of the B matrices = this ratio x learning rate (16 is the paper's choice)."),
    )
    quantization: Literal["nf4", "fp4", "int8"] | None = Field(
        None,
        description=(
            "QLoRA: load the frozen base quantized by bitsandbytes (`nf4` is QLoRA's choice; `fp4`; `int8`). "
            "The task head stays in full precision. Null: a full-precision base."
        ),
    )
    double_quant: bool = Field(
        True, description=("4-bit only: also quantize the quantization constants (about 0.4 bits per weight saved).")
    )
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description=(
            "4-bit only: dtype of the matrix products (`auto`: bfloat16 on GPUs that support it, else float32)."
        ),
    )

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one module")
        return v


def _targets(model: nn.Module, targets, head: list[str]):
    """`all-linear` for a convolutional network (no nn.Linear outside the head): the full names of its ungrouped
    nn.Conv2d layers (PEFT's LoRA for convolutions; depthwise convolutions have too few weights to need one).
    Anything else is PEFT's to resolve."""
    if targets != "all-linear":
        return targets
    outside = [(n, m) for n, m in model.named_modules() if not any(n == h or n.startswith(h + ".") for h in head)]
    if any(isinstance(m, nn.Linear) for _, m in outside):
        return targets
    convs = [n for n, m in outside if isinstance(m, nn.Conv2d) and m.groups == 1]
    return convs or targets


class QLoraConfig(LoraConfig):
    name: Literal["qlora"] = "qlora"
    default_learning_rate: ClassVar[float] = 1e-3
    quantization: Literal["nf4", "fp4", "int8"] | None = Field(
        "nf4",
        description=(
            "Quantization of the frozen base (`nf4` default for `qlora`; `fp4`; `int8`; null: full precision)."
        ),
    )


@METHODS.register("lora")
class LoraMethod(PeftMethod):
    name = "lora"
    Config = LoraConfig
    trains_new_tokens = True
    can_merge = True
    summary = "Low-rank adapters on chosen linear layers (PEFT); the task head trains in full."

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        from tuneforge.config.checks import check_module_pattern

        m = cfg.method
        check_module_pattern("method.target_modules", m.target_modules)
        if m.quantization:
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ConfigError(
                    f"method.quantization: '{m.quantization}' needs bitsandbytes: pip install 'tuneforge[quant]'"
                )
            if m.init in ("pissa", "olora"):
                raise ConfigError(
                    f"method.init: '{m.init}' rewrites the base weights, which a quantized base "
                    f"(method.quantization) cannot hold; use init: default or gaussian"
                )

    @classmethod
    def supports_strategy(cls, cfg: RunConfig, strategy: str) -> str | None:
        q = cfg.method.quantization
        if q and (strategy == "fsdp" or (strategy == "deepspeed" and cfg.train.distributed.deepspeed.stage == 3)):
            return (
                f"method.quantization: '{q}' keeps the base in bitsandbytes' packed layout, which sharding the "
                f"weights (fsdp, deepspeed stage 3) would split wrongly; use ddp or deepspeed stage 2 (each "
                f"process holds the whole quantized base), or no quantization"
            )
        return None

    @classmethod
    def lighter_variants(cls, cfg: RunConfig, device: str) -> list[list[str]]:
        """On CUDA, the same adapters on a 4-bit NF4 base (`qlora`), unless the base is 4-bit already; bitsandbytes'
        4-bit layers are CUDA kernels, so on CPU nothing."""
        if device != "cuda" or cfg.method.name == QLoraMethod.name or cfg.method.quantization in ("nf4", "fp4"):
            return []
        return [[f"method.name={QLoraMethod.name}"]]

    @contextlib.contextmanager
    def disabled_adapters(self, model: nn.Module) -> Iterator[nn.Module | None]:
        """With `init: pissa` / `olora` the adapter's starting value was cut out of the base weights, so switching it
        off leaves the residual, not the base model: None, and the caller loads the base itself (the base model a
        report compares with, the reference of a preference run)."""
        if self.cfg.init in ("pissa", "olora"):
            yield None
            return
        with super().disabled_adapters(model) as base:
            yield base

    def adapter_module_names(self, model: nn.Module) -> list[str]:
        """Every PEFT LoRA layer's adapter modules, as PEFT lists them (`lora_A`, `lora_B`, the embedding pair,
        DoRA's magnitude, `lora_dropout`)."""
        from peft.tuners.lora import LoraLayer

        out = []
        for name, mod in model.named_modules():
            if isinstance(mod, LoraLayer):
                for attr in (*mod.adapter_layer_names, *mod.other_param_names):
                    if isinstance(getattr(mod, attr, None), nn.Module):
                        out.append(f"{name}.{attr}" if name else attr)
        return out

    # ---- quantized base -----------------------------------------------------------------------------------
    def compute_dtype(self) -> torch.dtype:
        from tuneforge.models.loader import pick_dtype

        return pick_dtype(self.cfg.compute_dtype)

    def load_kwargs(self, ctx: MethodContext | None = None) -> dict:
        """A bitsandbytes quantization config when `quantization` is set, keeping the task's
        `ctx.full_precision_modules` (without a context or when the task names none: HEAD_NAMES) in full
        precision."""
        q = self.cfg.quantization
        if not q:
            return {}
        from transformers import BitsAndBytesConfig

        skip = full_precision_names(ctx)
        # one process per GPU (tuneforge train --nproc): each loads its quantized copy onto its own device
        place = (
            {"device_map": {"": int(os.environ["LOCAL_RANK"])}}
            if "LOCAL_RANK" in os.environ and torch.cuda.is_available()
            else {}
        )
        if q == "int8":
            return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip), **place}
        return {
            **place,
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=q,
                bnb_4bit_use_double_quant=self.cfg.double_quant,
                bnb_4bit_compute_dtype=self.compute_dtype(),
                llm_int8_skip_modules=skip,
            ),
        }

    def load(self, in_dir: str, build_base):
        model = super().load(in_dir, build_base)
        if self.cfg.quantization:
            keep_cpu_4bit_layout(model)
        return model

    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        if not self.cfg.quantization:
            return super().prepare(model, ctx)
        from peft import prepare_model_for_kbit_training

        for h in ctx.head_modules:
            if any(is_quantized(m) for m in model.get_submodule(h).modules()):
                raise MethodError(
                    f"method.quantization: the task head '{h}' was quantized; it must train in "
                    f"full precision (known head names: {', '.join(full_precision_names(ctx))})"
                )
        keep_cpu_4bit_layout(model)
        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=ctx.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )

    # ---- PEFT config and optimizer groups -----------------------------------------------------------------
    def peft_config(self, model: nn.Module, ctx: MethodContext):
        from peft import LoraConfig as PeftLoraConfig

        c = self.cfg
        init = {"default": True}.get(c.init, c.init)
        token_rows, whole = new_token_training(model, ctx)
        return PeftLoraConfig(
            task_type=peft_task_type(model),
            r=c.r,
            lora_alpha=c.alpha if c.alpha is not None else 2 * c.r,
            lora_dropout=c.dropout,
            target_modules=_targets(model, c.target_modules, ctx.head_modules),
            use_rslora=c.use_rslora,
            use_dora=c.use_dora,
            init_lora_weights=init,
            bias=c.bias,
            modules_to_save=list(ctx.head_modules) + whole or None,
            # the head trains in full through modules_to_save; it must not also get a LoRA
            exclude_modules=list(ctx.head_modules) + whole or None,
            trainable_token_indices=token_rows,
        )

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        groups = super().param_groups(model, lr, weight_decay)
        ratio = self.cfg.lora_plus_ratio
        if not ratio:
            return groups
        names = {id(p): n for n, p in model.named_parameters()}
        out = []
        for g in groups:
            b = [p for p in g["params"] if "lora_B" in names[id(p)]]
            rest = [p for p in g["params"] if "lora_B" not in names[id(p)]]
            if rest:
                out.append({**g, "params": rest})
            if b:
                out.append({**g, "params": b, "lr": lr * ratio})
        return out

    # ---- speed: the fused LoRA layer ---------------------------------------------------------------------
    def speed_levers(self, model: nn.Module, train_cfg, cuda: bool) -> list[Lever]:
        """`train.fused_lora`: every PEFT LoRA layer with dropout 0 and no DoRA runs as one autograd function
        (tuneforge.kernels.lora_fused); `auto` on with CUDA, `true` also on CPU."""
        value = train_cfg.fused_lora
        on, note = wanted(value, "fused_lora", cuda or value is True, NO_GPU)
        if on:
            from tuneforge.kernels.lora_fused import fuse_lora_layers

            fused, total = fuse_lora_layers(model)
            if total == 0:
                on, note = False, "off: the model has no LoRA layers"
            else:
                note += f": {fused} of {total} LoRA layers" + (
                    "" if fused == total else " (others have dropout > 0, DoRA or an unknown base)"
                )
                on = fused > 0
        return [Lever("fused_lora", on, note)]

    # ---- merge --------------------------------------------------------------------------------------------
    def merge(self, model: nn.Module) -> nn.Module:
        if not any(is_quantized(m) for m in model.modules()):
            return model.merge_and_unload()
        return merge_into_dequantized(model)


@METHODS.register("qlora")
class QLoraMethod(LoraMethod):
    """LoRA with a 4-bit NF4 base by default: the same method under a second name (only the defaults differ)."""

    name = "qlora"
    Config = QLoraConfig
    summary = "LoRA on a 4-bit NF4 (double-quantized) base: `lora` with `quantization: nf4` as the default."


def is_quantized(module: nn.Module) -> bool:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def keep_cpu_4bit_layout(model: nn.Module) -> int:
    """Keep every 4-bit layer in bitsandbytes' plain layout: turn off the CPU inference repacking that bitsandbytes
    0.50 applies on AVX512-BF16 machines the first time a layer runs in eval mode without gradients. Measured here,
    that repacking (1) reshapes layers whose input width is not a multiple of the quantization block into an empty
    tensor ("shape '[32, 0]' is invalid"), (2) rounds the scales to bf16 and undoes double quantization, moving
    logits by ~2e-4 against the dequantized weights, and (3) leaves the layer unable to train again (its packed
    path adds the bias in place: "a view of a leaf Variable ... in-place operation" at the first step after an
    evaluation). Returns how many layers were changed."""
    from tuneforge.kernels.lora_fused import plain_4bit_layout

    changed = 0
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if is_quantized(module) and state is not None and getattr(module, "support_avx512bf16_for_cpu", False):
            plain_4bit_layout(module)
            changed += 1
    return changed


def merge_into_dequantized(model: nn.Module) -> nn.Module:
    """Merge a LoRA trained on a bitsandbytes base without re-quantizing: dequantize the base weights to
    the compute precision, then add the low-rank update there. PEFT's own merge on a 4-bit layer would
    quantize W + BA again and change the outputs; this keeps them (up to float rounding).

    Args:
        model: a PeftModel whose base holds bitsandbytes layers.
    Returns a plain transformers model with no quantization config."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    config = model.peft_config[model.active_adapter]
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    base = model.unload()  # bitsandbytes layers back in place, trained head copies put back as the head
    try:
        base = base.dequantize()
    except Exception as exc:
        raise MethodError(f"cannot dequantize the base for merging: {first_line(exc)}") from None
    # int8 dequantizes to float16: compute the merge in float32 so rounding stays at float32 level
    base = base.float() if any(p.dtype == torch.float16 for p in base.parameters()) else base
    config.inference_mode = True
    wrapped = get_peft_model(base, config)
    set_peft_model_state_dict(wrapped, state)
    return wrapped.merge_and_unload()
