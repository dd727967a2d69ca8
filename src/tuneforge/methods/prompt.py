"""Prompt tuning through PEFT: a learned soft prompt prepended to the input embeddings. The task head
(if any) trains in full through PEFT's modules_to_save and is saved with the adapter."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from torch import nn

from tuneforge.config.schema import MethodConfig
from tuneforge.methods.base import METHODS, MethodContext
from tuneforge.methods.peft_common import PeftMethod, peft_task_type
from tuneforge.methods.peft_common import heads_or_none as _heads


class PromptConfig(MethodConfig):
    name: Literal["prompt"] = "prompt"
    default_learning_rate: ClassVar[float] = 3e-2
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Length of the learned soft prompt (tokens).")
    init_text: str | None = Field(
        None,
        description=(
            "Initialise the soft prompt from the embeddings of this text (repeated or cut to num_virtual_tokens), "
            "for example 'Classify the sentiment of this review:'. Null: random initialisation."
        ),
    )

    @field_validator("init_text")
    @classmethod
    def _text(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must not be empty (use null for a random initialisation)")
        return v


@METHODS.register("prompt")
class PromptMethod(PeftMethod):
    name = "prompt"
    Config = PromptConfig
    needs_task_type = True
    summary = "Prompt tuning (PEFT): a learned soft prompt before the input; random or from a text."

    def peft_config(self, model: nn.Module, ctx: MethodContext):
        from peft import PromptTuningConfig, PromptTuningInit

        c = self.cfg
        kw = {}
        if c.init_text:
            # PEFT reads the tokenizer from the base model's directory to embed the text
            kw = {
                "prompt_tuning_init": PromptTuningInit.TEXT,
                "prompt_tuning_init_text": c.init_text,
                "tokenizer_name_or_path": getattr(model, "name_or_path", None),
            }
        return PromptTuningConfig(
            task_type=peft_task_type(model), num_virtual_tokens=c.num_virtual_tokens, modules_to_save=_heads(ctx), **kw
        )
