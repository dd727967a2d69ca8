"""Talking to a causal LM: a tuned run, a base model directory or a builtin alias, with the chat template,
system prompt and stop tokens it was trained with (saved in the run's model/ directory). Generation itself is
tuneforge.models.generation; a run is loaded through tuneforge.inference (which never imports this module)."""

from __future__ import annotations

from pathlib import Path

import torch

from tuneforge.errors import ConfigError
from tuneforge.inference import load_run
from tuneforge.inference.chat import chat_model_of

# re-exported: chat and generate (the CLI, serve, the web UI, the Python API) import them from here, beside the loader
from tuneforge.models.generation import DEFAULT_SETTINGS, ChatModel, _gen_kwargs, generate, prompt_ids, stream  # noqa: F401


def _is_run(target: str) -> bool:
    p = Path(target)
    return (
        (p / "model" / "tuneforge.json").is_file() or (p / "tuneforge.json").is_file() or (p / "status.json").is_file()
    )


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
    from tuneforge.inference import set_precision
    from tuneforge.tasks.causal_lm_hooks import ChatInference

    set_precision(model, ChatInference.cpu_bf16, device, None)
    return ChatModel(model, tok, jinja, None, [i for i in stops if i is not None], dict(DEFAULT_SETTINGS), target)
