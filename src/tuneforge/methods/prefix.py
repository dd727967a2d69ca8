"""Prefix tuning through PEFT: learned key/value prefixes in every attention layer. The task head
(if any) trains in full through PEFT's modules_to_save and is saved with the adapter."""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field
from torch import nn

from tuneforge.config.schema import MethodConfig, RunConfig
from tuneforge.errors import ConfigError
from tuneforge.methods.base import METHODS, MethodContext
from tuneforge.methods.peft_common import PeftMethod, heads_or_none as _heads, peft_task_type


class PrefixConfig(MethodConfig):
    name: Literal["prefix"] = "prefix"
    default_learning_rate: ClassVar[float] = 1e-2
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description=(
        "Length of the learned prefix prepended to the keys and values of every attention layer."))
    projection: bool = Field(False, description=(
        "Reparametrise the prefix through a two-layer MLP while training (more stable, more parameters)."))
    projection_hidden_size: Optional[int] = Field(None, ge=1, description=(
        "Hidden width of that MLP; default: the model's hidden size."))


@METHODS.register("prefix")
class PrefixMethod(PeftMethod):
    name = "prefix"
    Config = PrefixConfig
    needs_task_type = True
    summary = "Prefix tuning (PEFT): learned key/value prefixes in every attention layer; optional MLP reparametrisation."

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        # the projected prefix cannot be reloaded mid-run: unless the user asked for it, keep the last weights
        if cfg.method.projection and "load_best_model" not in cfg.eval.model_fields_set:
            cfg.eval.load_best_model = False

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        if cfg.method.projection and cfg.eval.load_best_model:
            raise ConfigError("eval.load_best_model: prefix tuning with method.projection cannot reload its best "
                              "checkpoint during training (PEFT saves the projected prefix, not the MLP); set "
                              "eval.load_best_model=false or method.projection=false")
        if cfg.train.gradient_checkpointing:
            raise ConfigError("train.gradient_checkpointing: prefix tuning passes its prefix as a key/value "
                              "cache, which gradient checkpointing drops; set it to false")

    def peft_config(self, model: nn.Module, ctx: MethodContext):
        from peft import PrefixTuningConfig

        c = self.cfg
        hidden = c.projection_hidden_size or getattr(model.config, "hidden_size", None) or 512
        return PrefixTuningConfig(task_type=peft_task_type(model), num_virtual_tokens=c.num_virtual_tokens,
                                  prefix_projection=c.projection, encoder_hidden_size=hidden,
                                  modules_to_save=_heads(ctx))
