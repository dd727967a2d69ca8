"""Prefix tuning: learned key/value prefixes in every attention layer.

Causal LMs go through PEFT (the prefix is generation's key/value cache). Models without a cache (the BERT family)
use tuneforge's own implementation in `prefix_encoder` (PEFT's path for them relies on a `past_key_values`
keyword that transformers 5.2x removed from encoders). Either way the task head (if any) trains in full and is
saved with the prefix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from tuneforge.config.schema import MethodConfig, RunConfig
from tuneforge.errors import ConfigError, ModelError
from tuneforge.methods import prefix_encoder
from tuneforge.methods.base import METHODS, MethodContext
from tuneforge.methods.peft_common import PeftMethod, peft_task_type, task_peft_type
from tuneforge.methods.peft_common import heads_or_none as _heads


class PrefixConfig(MethodConfig):
    name: Literal["prefix"] = "prefix"
    default_learning_rate: ClassVar[float] = 1e-2
    num_virtual_tokens: int = Field(
        20,
        ge=1,
        le=1024,
        description=("Length of the learned prefix prepended to the keys and values of every attention layer."),
    )
    projection: bool = Field(
        False,
        description=("Reparametrise the prefix through a two-layer MLP while training (more stable, more parameters)."),
    )
    projection_hidden_size: int | None = Field(
        None, ge=1, description=("Hidden width of that MLP; default: the model's hidden size.")
    )


@METHODS.register("prefix")
class PrefixMethod(PeftMethod):
    name = "prefix"
    Config = PrefixConfig
    needs_task_type = True
    summary = (
        "Prefix tuning: learned key/value prefixes in every attention layer (PEFT for causal LMs, "
        "tuneforge's own for encoders); optional MLP reparametrisation."
    )

    @staticmethod
    def _through_peft(cfg: RunConfig) -> bool:
        # only generation needs PEFT's cache-based prefix; every other model type gets the encoder prefix
        return task_peft_type(cfg.task.type) == "CAUSAL_LM"

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        # PEFT's projected prefix cannot be reloaded mid-run: unless the user asked for it, keep the last weights
        if cls._through_peft(cfg) and cfg.method.projection and "load_best_model" not in cfg.eval.model_fields_set:
            cfg.eval.load_best_model = False

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        size = cfg.method.projection_hidden_size
        if size is not None and size > 65536:
            raise ConfigError(
                f"method.projection_hidden_size: {size} is larger than 65536 (the MLP would only "
                f"allocate memory); leave it null for the model's hidden size"
            )
        if not cls._through_peft(cfg):
            return
        super().check_config(cfg)
        if cfg.method.projection and cfg.eval.load_best_model:
            raise ConfigError(
                "eval.load_best_model: prefix tuning with method.projection cannot reload its best "
                "checkpoint during training (PEFT saves the projected prefix, not the MLP); set "
                "eval.load_best_model=false or method.projection=false"
            )
        if cfg.train.gradient_checkpointing:
            raise ConfigError(
                "train.gradient_checkpointing: prefix tuning passes its prefix as a key/value "
                "cache, which gradient checkpointing drops; set it to false"
            )

    def apply(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        if peft_task_type(model) == "CAUSAL_LM":
            self.own = False
            return super().apply(model, ctx)
        self.own, self.head_modules = True, list(ctx.head_modules)
        for p in model.parameters():
            p.requires_grad_(False)
        c = self.cfg
        hidden = c.projection_hidden_size or getattr(model.config, "hidden_size", None) or 512
        prefix_encoder.attach(model, c.num_virtual_tokens, hidden if c.projection else None)
        for name in [prefix_encoder.MODULE_NAME, *self.head_modules]:
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(True)
        if ctx.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    @classmethod
    def supports_strategy(cls, cfg: RunConfig, strategy: str) -> str | None:
        if strategy == "fsdp" or (strategy == "deepspeed" and cfg.train.distributed.deepspeed.stage == 3):
            return (
                "prefix tuning feeds its prefix into every attention layer from outside the transformer blocks, "
                "which sharding the weights (fsdp, deepspeed stage 3) does not support; use ddp or deepspeed "
                "stage 2"
            )
        return None

    def save(self, model: nn.Module, out_dir: str, state_dict: dict | None = None) -> None:
        if not getattr(self, "own", False):
            return super().save(model, out_dir, state_dict)
        prefix_encoder.save(model, out_dir, self.head_modules, self.cfg.model_dump(mode="json"))

    def load(self, in_dir: str, build_base: Callable[[str], nn.Module]) -> nn.Module:
        if not Path(in_dir, prefix_encoder.CONFIG_FILE).is_file():
            model = super().load(in_dir, build_base)
            if peft_task_type(model.get_base_model()) != "CAUSAL_LM":
                raise ModelError(
                    f"{in_dir}: this prefix-tuned encoder was saved by PEFT's prefix path, which the "
                    f"installed transformers no longer runs on encoders; train it again"
                )
            self.own = False
            return model
        from tuneforge.models.loader import read_run_metadata

        model = build_base(read_run_metadata(in_dir)["base_model"])
        self.own = True
        self.head_modules = json.loads(Path(in_dir, prefix_encoder.CONFIG_FILE).read_text()).get("head_modules", [])
        return prefix_encoder.load(model, in_dir)

    def peft_config(self, model: nn.Module, ctx: MethodContext):
        from peft import PrefixTuningConfig

        c = self.cfg
        hidden = c.projection_hidden_size or getattr(model.config, "hidden_size", None) or 512
        return PrefixTuningConfig(
            task_type=peft_task_type(model),
            num_virtual_tokens=c.num_virtual_tokens,
            prefix_projection=c.projection,
            encoder_hidden_size=hidden,
            modules_to_save=_heads(ctx),
        )
