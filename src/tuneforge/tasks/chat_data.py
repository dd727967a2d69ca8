"""The `data:` keys every task that templates chat prompts shares (preference, reward, GRPO): the chat template, a
system prompt, `{{name}}` placeholders and extra role names. Each task's data section adds its own format keys."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config.schema import DataSection


class ChatPromptData(DataSection):
    """`data:` keys of tasks that template chat prompts."""

    template: str = Field(
        "auto",
        description=(
            "Chat template: `auto` uses the tokenizer's own and needs one; a name (`chatml`, `llama3`, `alpaca`, "
            "`vicuna`) uses that template instead. The template used is saved with the model."
        ),
    )
    system_prompt: str | None = Field(
        None, description="System message added to every prompt that has none, in training and in chat."
    )
    variables: dict[str, str] = Field(
        default_factory=dict,
        description="Values for `{{name}}` placeholders in the data (prompts and answers) and the system prompt.",
    )
    roles: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Role names of the data mapped to `system`/`user`/`assistant`, added to the known ones (human, user, "
            "gpt, assistant, bot, model, system)."
        ),
    )
