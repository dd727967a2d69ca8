"""A loaded chat run as a ChatModel: the chat template, system prompt, stop tokens and sampling defaults it was
trained with (saved in its model/tuneforge.json). `tuneforge.generation` (chat, generate) and the multi-run
loader (inference/adapters.py) both build theirs here, so inference never imports generation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.errors import ModelError
from tuneforge.models.generation import DEFAULT_SETTINGS, ChatModel
from tuneforge.registry import TASKS

if TYPE_CHECKING:
    from tuneforge.inference import LoadedRun


def chat_model_of(run: LoadedRun, target: str, template: str | None = None) -> ChatModel:
    """A ChatModel over a loaded run: its saved chat template (or `template`), system prompt, stop tokens and
    sampling defaults. `target` names it in messages.
    Raises ModelError when the run's task does not chat; ConfigError for a template that does not fit."""
    from tuneforge.data.templates import resolve_template

    meta = run.meta
    if TASKS.get(meta["task"]).inference.interface != "chat":
        raise ModelError(
            f"{target} is a '{meta['task']}' run, which does not chat; chat and generate need "
            f"a run whose task generates text (use `tuneforge predict` for this one)"
        )
    tok = run.tokenizer
    jinja, stops = tok.chat_template, list(meta.get("stop_token_ids") or [tok.eos_token_id])
    if template not in (None, "auto"):
        fmt = resolve_template(tok, template, stops)
        jinja, stops = fmt.jinja, fmt.stop_token_ids or stops
    defaults = {**DEFAULT_SETTINGS, **(meta.get("generation") or {})}
    return ChatModel(run.model, tok, jinja, meta.get("system_prompt"), stops, defaults, target)
