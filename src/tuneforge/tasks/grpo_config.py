"""The `task:` and `data:` keys of GRPO runs (tasks/grpo.py): sampling, the loss variant, the rewards and the prompts'
format. Names follow TRL's GRPOConfig where one exists (num_generations, beta, epsilon, epsilon_high, loss_type,
scale_rewards, num_iterations, mask_truncated_completions -> mask_truncated)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.config.schema import TaskConfig
from tuneforge.tasks.causal_lm import GenerationSettings
from tuneforge.tasks.chat_data import ChatPromptData


class GRPOData(ChatPromptData):
    """`data:` keys of GRPO runs: where the prompts are, their chat template, and the prompt length limit."""

    format: Literal["auto", "prompt", "alpaca", "sharegpt", "messages"] = Field(
        "auto",
        description=(
            "Prompt record format: `prompt` (a `prompt_column` holding a text or a list of chat messages), `alpaca` "
            "(instruction/input; `output` becomes a field the rewards may read), `sharegpt` / `messages` (a "
            "conversation: the turns before its last assistant turn are the prompt, that turn becomes the field "
            "`answer` unless the record has one), `auto` (detected from the columns). Every other column is passed "
            "to the rewards as a field."
        ),
    )
    prompt_column: str = Field("prompt", description="Column of the `prompt` format.")
    conversation_column: str | None = Field(
        None, description="Column with the conversation for `sharegpt`/`messages` (default conversations / messages)."
    )
    max_prompt_length: int | None = Field(
        None,
        ge=1,
        description=(
            "Longest prompt in tokens (templated, generation prompt included); a longer one is a bad record "
            "(`data.bad_records`): prompts are never cut. Default: `max_length` minus `task.max_new_tokens`."
        ),
    )


class GRPOConfig(TaskConfig):
    type: Literal["grpo"] = "grpo"
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings,
        description="Sampling defaults saved with the model for `tuneforge chat` and `generate` (flags override them).",
    )
    compare_base: bool = Field(
        True, description="Also answer the held-out prompts with the base model (adapters off, else reloaded)."
    )
    rewards: list[Any] = Field(
        default_factory=list,
        description=(
            "The rewards, summed with their weights: each a builtin (`{name: exact_answer, column: answer, extract: "
            "last_number | boxed | 'regex:<pattern>'}`, `{name: format, pattern: ...}`, `{name: length, target: "
            "N}`, `{name: repetition, n: 3}`), a Python function (`{name: path/to/file.py:func}` or "
            "`{name: module:func}`, called as func(prompts=..., completions=..., **fields) -> one float per "
            "completion) or a finished reward run (`{run: runs/rm}`: the reward model scores prompt + completion), "
            "each with an optional `weight` (default 1). See docs/grpo.md."
        ),
    )
    reward_errors: Literal["raise", "zero"] = Field(
        "raise",
        description=(
            "A reward that raises or returns a wrong count, a non-number, NaN or inf: `raise` stops the run with one "
            "line naming the reward and the record; `zero` scores 0 and counts it in the log."
        ),
    )
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group).")
    max_new_tokens: int = Field(128, ge=1, description="Longest completion in tokens (longer ones are cut).")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the completions.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling of the completions (1 = off).")
    beta: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Weight of the KL term to the reference (the policy with the method's adapters off, else a frozen copy "
            "of the base); 0 = no reference at all (TRL's default)."
        ),
    )
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="Clipping of the importance ratio (lower side).")
    epsilon_high: float | None = Field(
        None, gt=0.0, description="Upper clipping of the importance ratio (DAPO's clip-higher); default `epsilon`."
    )
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "dapo",
        description=(
            "How token losses are averaged: `grpo` (per completion, then over completions), `bnpo` (over the "
            "batch's tokens), `dr_grpo` (sum over tokens / (completions x max_new_tokens): no length bias), `dapo` "
            "(over the tokens of the whole generation batch; TRL's default)."
        ),
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description=(
            "Advantages = reward - its group's mean, divided by the std of the `group` (GRPO), of the `batch`, or "
            "`none` (Dr. GRPO)."
        ),
    )
    num_iterations: int = Field(
        1,
        ge=1,
        description=(
            "Updates per generated batch (GRPO's mu): >1 reuses each batch's completions with the importance ratio "
            "to the policy that sampled them."
        ),
    )
    mask_truncated: bool = Field(
        False, description="Completions cut at `max_new_tokens` (no end-of-turn token) leave the loss (DAPO)."
    )
    reference: Literal["auto", "adapters", "copy"] | None = Field(
        None,
        description=(
            "The reference of the KL term (beta > 0): `adapters` (the policy with its adapters off), `copy` (a "
            "frozen copy of the base), `auto` (adapters where the method has them, else copy)."
        ),
    )
    reference_model: str | None = Field(
        None,
        description="Another reference model (beta > 0), with the policy's tokenizer: a finished full run or a model.",
    )
    report_samples: int = Field(
        2, ge=0, le=16, description="Held-out prompts whose best and worst sampled completions eval/report.md shows."
    )
