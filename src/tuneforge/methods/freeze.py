"""Partial fine-tuning: only the top blocks (or chosen modules) and the task head learn; the rest is frozen."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from torch import nn

from tuneforge.errors import ConfigError, MethodError
from tuneforge.methods.base import METHODS
from tuneforge.methods.layered import LayeredMethod, LayerwiseConfig
from tuneforge.methods.layers import EMBEDDINGS, HEAD, TOP, Layout

DEFAULT_TRAINABLE_LAYERS = 2


class FreezeConfig(LayerwiseConfig):
    name: Literal["freeze"] = "freeze"
    default_learning_rate: ClassVar[float] = 1e-4
    trainable_layers: int | None = Field(
        None,
        ge=0,
        description=(
            "Train the top N transformer blocks (0: the task head only). Default 2 when neither "
            "`frozen_layers` nor `trainable_modules` is given."
        ),
    )
    frozen_layers: int | None = Field(
        None, ge=1, description=("Alternatively: freeze the bottom N blocks and train every block above them.")
    )
    trainable_modules: list[str] | None = Field(
        None,
        description=(
            "Alternatively: regular expressions searched in parameter names (for example `attention` or "
            "`layer\\.5\\.`); matching parameters train, everything else except the task head is frozen."
        ),
    )
    train_embeddings: bool = Field(False, description="Also train the embeddings (frozen by default).")

    @field_validator("trainable_modules")
    @classmethod
    def _patterns(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one pattern")
        for pat in v:
            try:
                re.compile(pat)
            except re.error as exc:
                raise ValueError(f"'{pat}' is not a valid regular expression ({exc})") from None
        return v

    @model_validator(mode="after")
    def _one_selection(self):
        given = [k for k in ("trainable_layers", "frozen_layers", "trainable_modules") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of {' / '.join(given)} (they select the trainable part differently)")
        return self


@METHODS.register("freeze")
class FreezeMethod(LayeredMethod):
    name = "freeze"
    Config = FreezeConfig
    summary = "Partial fine-tuning: the top N blocks (or chosen modules) and the task head train; the rest is frozen."
    trains_new_tokens = True  # with method.train_embeddings: true (check_config), every embedding row trains

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.model.extends_vocabulary and not cfg.method.train_embeddings:
            raise ConfigError(
                "method.train_embeddings: the run adds tokens to the vocabulary (model.extend_vocabulary / "
                "add_tokens), whose embedding rows must train; set method.train_embeddings: true"
            )

    def needs_blocks(self) -> bool:
        return self.cfg.trainable_modules is None or super().needs_blocks()

    def choose(self, model: nn.Module, layout: Layout) -> set[int]:
        c = self.cfg
        chosen = {i for i, part in layout.where.items() if part == HEAD}
        if c.train_embeddings:
            chosen |= {i for i, part in layout.where.items() if part == EMBEDDINGS}
        if c.trainable_modules is not None:
            pats = [re.compile(p) for p in c.trainable_modules]
            matched = set()
            for name, p in model.named_parameters(remove_duplicate=False):
                for pat in pats:
                    if pat.search(name):
                        chosen.add(id(p))
                        matched.add(pat.pattern)
            missing = [p.pattern for p in pats if p.pattern not in matched]
            if missing:
                raise MethodError(
                    f"method.trainable_modules: no parameter name matches {missing} "
                    f"(names look like '{next(iter(dict(model.named_parameters())))}')"
                )
            return chosen
        n = layout.num_blocks
        if c.frozen_layers is not None:
            if c.frozen_layers >= n:
                raise MethodError(
                    f"method.frozen_layers: {c.frozen_layers}, but the model has {n} blocks; "
                    f"use method.trainable_layers=0 to train the head only"
                )
            train_blocks = set(range(c.frozen_layers, n))
        else:
            k = min(DEFAULT_TRAINABLE_LAYERS, n) if c.trainable_layers is None else c.trainable_layers
            if k > n:
                raise MethodError(f"method.trainable_layers: {k}, but the model has {n} blocks")
            train_blocks = set(range(n - k, n))
        chosen |= {i for i, part in layout.where.items() if part in train_blocks}
        # the final norm / pooler sit between the top block and the head: they train with the top block
        if train_blocks:
            chosen |= {i for i, part in layout.where.items() if part == TOP}
        return chosen
