"""IA3 through PEFT: learned scaling vectors on keys, values and feed-forward activations (mergeable).
The task head (if any) trains in full through PEFT's modules_to_save and is saved with the adapter."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from torch import nn

from tuneforge.config.schema import MethodConfig, RunConfig
from tuneforge.errors import ConfigError, MethodError
from tuneforge.methods.base import METHODS, MethodContext
from tuneforge.methods.peft_common import PeftMethod, peft_task_type
from tuneforge.methods.peft_common import heads_or_none as _heads


class IA3Config(MethodConfig):
    name: Literal["ia3"] = "ia3"
    default_learning_rate: ClassVar[float] = 3e-3
    target_modules: str | list[str] | None = Field(
        None,
        description=(
            "Layers whose activations get a learned scaling vector: a list of module-name suffixes, one regular "
            "expression, or `all-linear`. Null: PEFT's choice for the architecture (keys, values and the "
            "feed-forward output)."
        ),
    )
    feedforward_modules: str | list[str] | None = Field(
        None,
        description=(
            "Which of target_modules are feed-forward layers (scaled on their input rather than output). Null: "
            "PEFT's choice for the architecture; must be a subset of target_modules when both are given."
        ),
    )

    @field_validator("target_modules", "feedforward_modules")
    @classmethod
    def _names(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one module")
        return v


@METHODS.register("ia3")
class IA3Method(PeftMethod):
    name = "ia3"
    Config = IA3Config
    can_merge = True
    summary = "IA3 (PEFT): learned scaling vectors on keys, values and feed-forward activations; can merge."

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        m = cfg.method
        if (m.feedforward_modules is None) != (m.target_modules is None):
            raise ConfigError(
                "method.feedforward_modules: give both target_modules and feedforward_modules, "
                "or neither (PEFT's per-architecture choice)"
            )
        from tuneforge.config.checks import check_module_pattern

        check_module_pattern("method.target_modules", m.target_modules)
        check_module_pattern("method.feedforward_modules", m.feedforward_modules)
        # PEFT checks the subset only between two lists (a regex or all-linear resolves per model)
        if isinstance(m.target_modules, list) and isinstance(m.feedforward_modules, list):
            extra = [f for f in m.feedforward_modules if f not in m.target_modules]
            if extra:
                shown = ", ".join(extra[:5]) + (", …" if len(extra) > 5 else "")
                shown = shown if len(shown) <= 80 else shown[:79] + "…"
                raise ConfigError(
                    f"method.feedforward_modules: must be a subset of method.target_modules; not in "
                    f"target_modules: {shown}"
                )

    def peft_config(self, model: nn.Module, ctx: MethodContext):
        from peft import IA3Config as PeftIA3Config

        c = self.cfg
        if c.target_modules is None:
            from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as defaults

            kind = getattr(getattr(model, "config", None), "model_type", None)
            if kind not in defaults:
                raise MethodError(
                    f"method.target_modules: PEFT has no IA3 default for '{kind}' models; name the "
                    f"layers, for example method.target_modules=[k_proj,v_proj,fc2] "
                    f"method.feedforward_modules=[fc2] (a vision transformer)"
                )
        return PeftIA3Config(
            task_type=peft_task_type(model),
            target_modules=c.target_modules,
            feedforward_modules=c.feedforward_modules,
            modules_to_save=_heads(ctx),
            exclude_modules=_heads(ctx),
        )
