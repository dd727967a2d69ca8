"""The part of `full` and `freeze` that is the same: layer-wise learning rates from the model's `layers.Layout`
and progressive unfreezing (`unfreeze`). Imports point one way: base <- layers <- unfreeze <- layered <- full,
freeze."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from tuneforge.config.schema import MethodConfig
from tuneforge.errors import MethodError
from tuneforge.methods.base import Method, MethodContext
from tuneforge.methods.layers import HEAD, TOP, Layout, describe, layerwise_param_groups, unique_parameters
from tuneforge.methods.unfreeze import ProgressiveUnfreezing, UnfreezeSchedule, build_stages


class LayerwiseConfig(MethodConfig):
    """Keys shared by the methods that train whole pretrained layers (`full`, `freeze`)."""

    layerwise_lr_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description=(
            "Layer-wise learning-rate decay: the top block trains at the learning rate, each block below at "
            "decay x the one above, the embeddings below the bottom block (for example 0.9). Null: one rate."
        ),
    )
    head_lr: float | None = Field(
        None,
        gt=0,
        description=("Learning rate of the task head (for example `classifier`); default: the run's learning rate."),
    )
    embeddings_lr: float | None = Field(
        None,
        gt=0,
        description=("Learning rate of the embeddings; default: from the layer-wise decay chain (or the run's rate)."),
    )
    unfreeze_schedule: UnfreezeSchedule | None = Field(
        None,
        description=(
            "Progressive unfreezing (ULMFiT), for example `{start: head, every_epochs: 1, group_size: 1}`: "
            "begin with the head, unfreeze one more group of blocks from the top at each interval."
        ),
    )


class LayeredMethod(Method):
    """Base of methods that pick whole pretrained parameters to train. Subclasses implement `choose`."""

    can_merge = True
    saves_whole_model = True

    def needs_blocks(self) -> bool:
        """Whether the config asks for something that needs the block structure."""
        return bool(self.cfg.layerwise_lr_decay not in (None, 1.0) or self.cfg.unfreeze_schedule)

    def choose(self, model: nn.Module, layout: Layout) -> set[int]:
        """ids of the parameters that train (eventually, with progressive unfreezing)."""
        raise NotImplementedError

    def apply(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        try:
            self.layout = describe(model, ctx.head_modules)
        except MethodError:
            if self.needs_blocks():
                raise
            # no block stack (an unusual architecture): every parameter counts as `top`, one learning rate
            heads = {id(p) for h in ctx.head_modules for p in model.get_submodule(h).parameters()}
            self.layout = Layout(
                [], [], list(ctx.head_modules), {id(p): HEAD if id(p) in heads else TOP for p in model.parameters()}
            )
        chosen = self.choose(model, self.layout)
        self._trainable = [p for p in unique_parameters(model) if id(p) in chosen]
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
        if ctx.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
        return model

    def trainable_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        # not requires_grad: progressive unfreezing switches it off for parameters that train later
        ids = {id(p) for p in getattr(self, "_trainable", [])}
        if not ids:
            return super().trainable_parameters(model)
        seen, out = set(), []
        for n, p in model.named_parameters(remove_duplicate=False):
            if id(p) in ids and id(p) not in seen:
                seen.add(id(p))
                out.append((n, p))
        return out

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        c = self.cfg
        layout = getattr(self, "layout", None) or describe(model)
        return layerwise_param_groups(
            model,
            layout,
            self.trainable_parameters(model),
            lr,
            weight_decay,
            c.layerwise_lr_decay,
            c.head_lr,
            c.embeddings_lr,
        )

    def callbacks(self, ctx: MethodContext) -> list:
        if self.cfg.unfreeze_schedule is None:
            return []
        stages = build_stages(self.layout, self._trainable, self.cfg.unfreeze_schedule)
        return [ProgressiveUnfreezing(stages, self.cfg.unfreeze_schedule)]

    def save(self, model: nn.Module, out_dir: str, state_dict: dict | None = None) -> None:
        # the whole model: it loads with AutoModel alone, which is what `merge` (a copy) promises
        model.save_pretrained(
            out_dir, safe_serialization=True, **({"state_dict": state_dict} if state_dict is not None else {})
        )

    def load(self, in_dir: str, build_base) -> nn.Module:
        return build_base(in_dir)

    def merge(self, model: nn.Module) -> nn.Module:
        return model  # already a plain checkpoint
