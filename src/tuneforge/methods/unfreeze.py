"""Progressive unfreezing (ULMFiT): train the head (or the top blocks) first, then unfreeze one more group of
blocks from the top every few epochs or steps until everything the method trains is trainable.

The optimizer is built once with every parameter that will ever train; a parameter that is not yet
unfrozen has requires_grad False, so it gets no gradient and AdamW skips it (no update, no weight decay,
no moment state). Unfreezing only flips requires_grad, so nothing about the optimizer changes mid-run.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

from pydantic import Field, model_validator
from torch import nn
from transformers import TrainerCallback

from tuneforge.config.schema import Section
from tuneforge.methods.layers import EMBEDDINGS, HEAD, TOP, Layout

log = logging.getLogger("tuneforge")


class UnfreezeSchedule(Section):
    start: Literal["head", "top_k"] = Field(
        "head",
        description=(
            "What trains from the first step: `head` (the task head and the layers above the blocks, such as "
            "the final norm or pooler) or `top_k` (that plus the top `top_k` blocks)."
        ),
    )
    top_k: int = Field(1, ge=1, description="Blocks trainable from the start when `start` is `top_k`.")
    every_epochs: float | None = Field(
        None,
        gt=0,
        description=("Unfreeze the next group every this many epochs (fractions allowed). Give this or `every_steps`."),
    )
    every_steps: int | None = Field(
        None,
        ge=1,
        description=("Unfreeze the next group every this many optimizer steps. Give this or `every_epochs`."),
    )
    group_size: int = Field(1, ge=1, description="Blocks unfrozen at each stage, from the top down.")

    @model_validator(mode="after")
    def _one_clock(self):
        if (self.every_epochs is None) == (self.every_steps is None):
            raise ValueError("unfreeze_schedule needs exactly one of every_epochs or every_steps")
        return self


def build_stages(layout: Layout, params: list[nn.Parameter], schedule: UnfreezeSchedule) -> list[list[nn.Parameter]]:
    """Split the parameters that will train into stages: stage 0 trains from the start, each later stage
    unfreezes at its turn. Blocks unfreeze top down in groups of `group_size`; the embeddings come last.

    Args:
        layout: the model's `layers.Layout`.
        params: every parameter the method trains eventually.
        schedule: the user's schedule."""
    by_part: dict[object, list[nn.Parameter]] = {}
    for p in params:
        by_part.setdefault(layout.where.get(id(p), TOP), []).append(p)
    blocks = sorted((k for k in by_part if isinstance(k, int)), reverse=True)  # top first
    first = by_part.get(HEAD, []) + by_part.get(TOP, [])
    k = schedule.top_k if schedule.start == "top_k" else 0
    for b in blocks[:k]:
        first += by_part[b]
    stages = [first]
    rest = blocks[k:]
    for i in range(0, len(rest), schedule.group_size):
        stages.append([p for b in rest[i : i + schedule.group_size] for p in by_part[b]])
    if by_part.get(EMBEDDINGS):
        stages.append(by_part[EMBEDDINGS])
    return [s for s in stages if s]


class ProgressiveUnfreezing(TrainerCallback):
    """Sets requires_grad by stage; the stage is a function of the global step (or epoch), so a resumed
    run lands in the same stage as the interrupted one."""

    def __init__(self, stages: list[list[nn.Parameter]], schedule: UnfreezeSchedule):
        self.stages = stages
        self.schedule = schedule
        self.current = -1

    def stage_at(self, global_step: int, epoch: float) -> int:
        s = self.schedule
        if s.every_steps:
            k = global_step // s.every_steps
        else:
            k = math.floor((epoch or 0.0) / s.every_epochs + 1e-9)
        return min(k, len(self.stages) - 1)

    def set_stage(self, k: int) -> None:
        for i, group in enumerate(self.stages):
            for p in group:
                p.requires_grad_(i <= k)
        if k != self.current and self.current >= 0:
            n = sum(p.numel() for g in self.stages[: k + 1] for p in g)
            log.info(
                "progressive unfreezing: stage %d of %d, %s parameters trainable", k, len(self.stages) - 1, f"{n:,}"
            )
        self.current = k

    def on_train_begin(self, args, state, control, **kwargs):
        self.set_stage(self.stage_at(state.global_step, state.epoch or 0.0))

    def on_step_begin(self, args, state, control, **kwargs):
        k = self.stage_at(state.global_step, state.epoch or 0.0)
        if k != self.current:
            self.set_stage(k)

    def on_train_end(self, args, state, control, **kwargs):
        # leave the model as the method defines it (everything it trains is trainable), for saving and reuse
        self.set_stage(len(self.stages) - 1)
