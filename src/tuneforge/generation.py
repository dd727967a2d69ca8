"""Talking to a causal LM: a tuned run, a base model directory or a builtin alias, with the chat template,
system prompt and stop tokens it was trained with (saved in the run's model/ directory). Generation itself is
tuneforge.models.generation."""

from __future__ import annotations

from pathlib import Path

import torch

from tuneforge.errors import ConfigError, ModelError
from tuneforge.models.generation import (
    DEFAULT_SETTINGS,
    ChatModel,
    prompt_ids,  # noqa: F401
)
from tuneforge.registry import TASKS


def _is_run(target: str) -> bool:
    p = Path(target)
    return (
        (p / "model" / "tuneforge.json").is_file() or (p / "tuneforge.json").is_file() or (p / "status.json").is_file()
    )


def chat_model_of(run, target: str, template: str | None = None) -> ChatModel:
    """A ChatModel over a loaded run (tuneforge.inference.LoadedRun): its saved chat template (or `template`),
    system prompt, stop tokens and sampling defaults. `target` names it in messages.
    Raises ModelError when the run's task does not chat; ConfigError for a template that does not fit."""
    from tuneforge.data.templates import resolve_template

    meta = run.meta
    if TASKS.get(meta["task"]).interface != "chat":
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


def load_chat_model(target: str, template: str | None = None, device: str | None = None) -> ChatModel:
    """Load a tuned causal-LM run, a base model directory or a builtin alias for chatting.

    Args:
        target: run directory (or its model/), local model directory, or `builtin:` alias.
        template: override the chat template (`auto` or a registry name); runs use their saved one.
        device: torch device; default cuda when available.

    Raises ModelError when the target is not a causal LM or cannot be loaded; ConfigError for a template
    that does not fit the tokenizer."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from tuneforge.data.templates import resolve_template

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if _is_run(target):
        from tuneforge.inference import load_run

        return chat_model_of(load_run(target, device=device), str(target), template)

    from tuneforge.models.loader import load_model, load_tokenizer, resolve_model

    path = resolve_model(target)
    tok = load_tokenizer(path)
    try:
        gen = GenerationConfig.from_pretrained(path)
        base = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    except (OSError, ValueError):
        base = []
    base = [i for i in base if i is not None]
    jinja, stops = None, list(dict.fromkeys(base + [tok.eos_token_id]))
    if tok.chat_template or template not in (None, "auto"):
        fmt = resolve_template(tok, template or "auto", base)
        if fmt.problems:
            raise ConfigError(f"chat template of {target}: {fmt.problems[0]}")
        jinja, stops = fmt.jinja, fmt.stop_token_ids
    model = load_model(path, AutoModelForCausalLM)
    model.eval().to(device)
    return ChatModel(model, tok, jinja, None, [i for i in stops if i is not None], dict(DEFAULT_SETTINGS), target)
