"""Full fine-tuning: every parameter learns (optionally with layer-wise rates or progressive unfreezing)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from tuneforge.methods.base import METHODS
from tuneforge.methods.layered import LayeredMethod, LayerwiseConfig
from tuneforge.methods.layers import EMBEDDINGS, Layout, unique_parameters


class FullConfig(LayerwiseConfig):
    name: Literal["full"] = "full"
    default_learning_rate: ClassVar[float] = 5e-5
    freeze_embeddings: bool = Field(False, description="Keep the embeddings fixed (saves memory, often no loss).")


@METHODS.register("full")
class FullMethod(LayeredMethod):
    name = "full"
    Config = FullConfig
    trains_new_tokens = True  # every row of the resized embedding trains
    summary = "Train every parameter of the model."

    def choose(self, model: nn.Module, layout: Layout) -> set[int]:
        return {
            id(p)
            for p in unique_parameters(model)
            if not (self.cfg.freeze_embeddings and layout.where.get(id(p)) == EMBEDDINGS)
        }
