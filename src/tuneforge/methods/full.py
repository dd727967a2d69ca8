"""Full fine-tuning: every parameter learns."""
from __future__ import annotations

from typing import Callable, ClassVar, Literal

from torch import nn

from tuneforge.config.schema import MethodConfig
from tuneforge.methods.base import METHODS, Method, MethodContext
from pydantic import Field


class FullConfig(MethodConfig):
    name: Literal["full"] = "full"
    default_learning_rate: ClassVar[float] = 5e-5
    freeze_embeddings: bool = Field(False, description="Keep the token embeddings fixed (saves memory, often no loss).")


@METHODS.register("full")
class FullMethod(Method):
    name = "full"
    Config = FullConfig
    summary = "Train every parameter of the model."

    def apply(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        if self.cfg.freeze_embeddings:
            emb = model.get_input_embeddings()
            if emb is not None:
                emb.weight.requires_grad_(False)
        if ctx.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def save(self, model: nn.Module, out_dir: str) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, in_dir: str, build_base: Callable[[str], nn.Module]) -> nn.Module:
        return build_base(in_dir)

    def merge(self, model: nn.Module) -> nn.Module:
        return model  # already a plain checkpoint
