"""The `task:` and `data:` keys of reward-model runs (tasks/reward.py). The data keys are the preference task's (the
same pair files, formats, chat template and length rule), with `data.format: kto` refused: unpaired answers have no
pair to compare."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tuneforge.config.schema import TaskConfig
from tuneforge.tasks.preference_config import PreferenceData

#: the pair formats a reward model reads (data/preference_formats.py)
PAIR_FORMATS = ("auto", "alpaca", "sharegpt", "trl")


class RewardData(PreferenceData):
    """`data:` keys of reward runs: the preference task's, for pairs only."""

    format: Literal["auto", "alpaca", "sharegpt", "trl"] = Field(  # type: ignore[assignment]
        "auto",
        description=(
            "Pair record format: `alpaca` (instruction/input/chosen/rejected, LLaMA-Factory), `sharegpt` "
            "(conversations + chosen/rejected messages, LLaMA-Factory), `trl` (prompt/chosen/rejected as texts or "
            "message lists), `auto` (detected from the columns). An optional `margin` column (a number per pair, as "
            "in TRL's reward data) is the margin the chosen reward must exceed the rejected one by. `kto` (unpaired "
            "answers) does not apply: a reward model learns from pairs."
        ),
    )
    template: str = Field(
        "auto",
        description=(
            "Chat template: `auto` uses the tokenizer's own, and a model whose tokenizer has none (an encoder such "
            "as MiniLM) scores prompt and answer as a text pair; a name (`chatml`, `llama3`, `alpaca`, `vicuna`) "
            "uses that template. With a template the scored text is the templated conversation (prompt + answer, "
            "end-of-turn token included); the template is saved with the model."
        ),
    )
    system_prompt: str | None = Field(
        None,
        description=(
            "System message added to every prompt that has none, in training and when a finished run scores prompts "
            "and answers (saved with the model)."
        ),
    )
    max_prompt_length: int | None = Field(
        None,
        ge=1,
        description=(
            "Longest prompt in tokens (the templated conversation before the answer; without a chat template the "
            "prompt text with the tokenizer's special tokens); a longer prompt is a bad record (`data.bad_records`): "
            "prompts are never cut. Default: half of `max_length`. The answers are cut so that prompt + answer fit "
            "`max_length`; cut pairs are counted in data/report.md."
        ),
    )

    @field_validator("format", mode="before")
    @classmethod
    def _pairs_only(cls, value):
        if value == "kto":
            raise ValueError(
                "kto holds unpaired answers (one answer with a good/bad label), which have no pair to compare; a "
                f"reward model learns from pairs: use {', '.join(PAIR_FORMATS)}"
            )
        return value


class RewardConfig(TaskConfig):
    type: Literal["reward"] = "reward"
    center_rewards_coefficient: float | None = Field(
        None,
        ge=0.0,
        description=(
            "Adds this weight times mean((r_chosen + r_rejected)^2) to the loss, which keeps the rewards centred on "
            "0 (TRL's name; Eisenstein et al. 2023 use 0.01). null: off."
        ),
    )
    disable_dropout: bool = Field(
        True,
        description=(
            "Switch the model's dropout off while training (TRL's default), so the chosen and rejected answers "
            "of a pair are scored by the same network."
        ),
    )
    report_pairs: int = Field(
        5, ge=0, le=64, description="Held-out pairs shown in eval/report.md with the reward of each answer."
    )
