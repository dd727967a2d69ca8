"""LoRA through PEFT: low-rank updates on chosen linear layers; the task head trains in full and is saved
with the adapter (PEFT's modules_to_save), so the saved adapter loads with stock PEFT."""
from __future__ import annotations

from typing import Callable, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator
from torch import nn

from tuneforge.config.schema import MethodConfig, RunConfig
from tuneforge.errors import ConfigError
from tuneforge.methods.base import METHODS, Method, MethodContext


class LoraConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    default_learning_rate: ClassVar[float] = 1e-3
    r: int = Field(8, ge=1, le=4096, description="Rank of the low-rank update.")
    alpha: Optional[float] = Field(None, gt=0, description="Scaling numerator (update scaled by alpha/r); default 2*r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: Union[str, list[str]] = Field("all-linear", description=(
        "Layers that get LoRA: `all-linear`, a list of module-name suffixes (for example [query, value]), "
        "or one regular expression matched against full module names."))
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r) (rsLoRA).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA): learns magnitude and direction.")
    init: Literal["default", "gaussian", "pissa", "olora", "loftq", "eva"] = Field("default", description=(
        "Initialisation of the LoRA matrices, as PEFT offers them (`default`: B=0, A Kaiming-uniform)."))
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    lora_plus_ratio: Optional[float] = Field(None, gt=0, description=(
        "LoRA+: learning rate of the B matrices = this ratio x learning rate (16 is the paper's choice)."))

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one module")
        return v


@METHODS.register("lora")
class LoraMethod(Method):
    name = "lora"
    Config = LoraConfig
    can_merge = True
    summary = "Low-rank adapters on chosen linear layers (PEFT); the task head trains in full."

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        if cfg.method.init == "loftq":
            raise ConfigError("method.init: 'loftq' needs a quantized base; use it with method.quantization")

    def peft_config(self, ctx: MethodContext):
        from peft import LoraConfig as PeftLoraConfig

        c = self.cfg
        init = {"default": True}.get(c.init, c.init)
        return PeftLoraConfig(
            r=c.r, lora_alpha=c.alpha if c.alpha is not None else 2 * c.r, lora_dropout=c.dropout,
            target_modules=c.target_modules, use_rslora=c.use_rslora, use_dora=c.use_dora,
            init_lora_weights=init, bias=c.bias,
            modules_to_save=list(ctx.head_modules) or None,
            # the head trains in full through modules_to_save; it must not also get a LoRA
            exclude_modules=list(ctx.head_modules) or None,
        )

    def apply(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        from peft import get_peft_model

        if ctx.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        try:
            return get_peft_model(model, self.peft_config(ctx))
        except ValueError as exc:  # PEFT: target modules not found, and similar
            raise ConfigError(f"method.target_modules: {str(exc).splitlines()[0]}") from None

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

    def save(self, model: nn.Module, out_dir: str) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, in_dir: str, build_base: Callable[[str], nn.Module]) -> nn.Module:
        from peft import PeftModel

        from tuneforge.models.loader import read_run_metadata
        base = build_base(read_run_metadata(in_dir)["base_model"])
        return PeftModel.from_pretrained(base, in_dir)

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()
