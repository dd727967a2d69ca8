"""Generating with a causal LM (a tuned run, a base model): the prompt exactly as in training (chat template,
system prompt), sampling settings, stop tokens, batched and streamed answers. Loading a run for chatting is
tuneforge.generation (layer 5); this is what the causal_lm task's evaluation report uses too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from tuneforge.data.templates import with_system
from tuneforge.errors import ConfigError, DataError

#: sampling defaults when neither the run nor the flags say otherwise
DEFAULT_SETTINGS = {"max_new_tokens": 256, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.0}


@dataclass
class ChatModel:
    model: Any
    tokenizer: Any
    jinja: str | None  # None: no chat template, prompts are used as plain text
    system_prompt: str | None
    stop_token_ids: list[int]
    defaults: dict = field(default_factory=lambda: dict(DEFAULT_SETTINGS))
    source: str = ""


def prompt_ids(cm: ChatModel, messages: list[dict]) -> list[int]:
    """Token ids of the prompt that asks for the next assistant turn (tokenized exactly as in training)."""
    from tuneforge.data.templates import render

    if cm.jinja is None:  # a model without template continues plain text
        text = "\n".join(m["content"] for m in messages)
        return cm.tokenizer(text)["input_ids"]
    text = render(cm.tokenizer, cm.jinja, with_system(messages, cm.system_prompt), add_generation_prompt=True)
    return cm.tokenizer(text, add_special_tokens=False)["input_ids"]


def _gen_kwargs(cm: ChatModel, settings: dict) -> dict:
    s = {**cm.defaults, **{k: v for k, v in settings.items() if v is not None}}
    if s["temperature"] < 0 or not 0 < s["top_p"] <= 1 or s["repetition_penalty"] <= 0 or s["max_new_tokens"] < 1:
        raise ConfigError(
            "sampling: temperature must be >= 0, top_p in (0, 1], repetition_penalty > 0, max_new_tokens >= 1"
        )
    sample = s["temperature"] > 0
    kw = {
        "max_new_tokens": int(s["max_new_tokens"]),
        "do_sample": sample,
        "repetition_penalty": float(s["repetition_penalty"]),
        "eos_token_id": cm.stop_token_ids,
        "pad_token_id": cm.tokenizer.pad_token_id if cm.tokenizer.pad_token_id is not None else cm.stop_token_ids[0],
    }
    if sample:
        kw.update(temperature=float(s["temperature"]), top_p=float(s["top_p"]))
    else:  # the model's generation_config may carry sampling values; greedy must not warn about them
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


@torch.no_grad()
def generate(
    cm: ChatModel,
    conversations: list[list[dict]],
    settings: dict | None = None,
    batch_size: int = 8,
    seed: int | None = None,
) -> list[dict]:
    """Answer each conversation (a list of messages ending with a user turn).

    Args:
        cm: the loaded model.
        conversations: one message list per answer wanted.
        settings: temperature (0 = greedy), top_p, max_new_tokens, repetition_penalty; None keeps defaults.
        batch_size: conversations per generate call (left-padded).
        seed: seed for sampling.

    Returns one dict per conversation: response, finish_reason (`stop` when a stop token ended it, `length`
    when max_new_tokens did), tokens (generated, without the stop token).

    Raises ConfigError for invalid sampling settings, DataError for an empty conversation."""
    kw = _gen_kwargs(cm, settings or {})
    if seed is not None:
        torch.manual_seed(seed)
    device = next(cm.model.parameters()).device
    pad = kw["pad_token_id"]
    results = []
    for s in range(0, len(conversations), batch_size):
        chunk = conversations[s : s + batch_size]
        prompts = []
        for msgs in chunk:
            if not msgs:
                raise DataError("an empty conversation has nothing to answer")
            prompts.append(prompt_ids(cm, msgs))
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[k, width - len(p) :] = torch.as_tensor(p)
            mask[k, width - len(p) :] = 1
        out = cm.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
        stops = set(cm.stop_token_ids)
        for row in out[:, width:].tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), None)
            toks = row if cut is None else row[:cut]
            results.append(
                {
                    "response": cm.tokenizer.decode(toks, skip_special_tokens=True).strip(),
                    "finish_reason": "length" if cut is None else "stop",
                    "tokens": len(toks),
                }
            )
    return results


def stream(cm: ChatModel, messages: list[dict], settings: dict | None = None) -> Iterator[str]:
    """Yield the answer to `messages` piece by piece as it is generated (TextIteratorStreamer)."""
    from transformers import TextIteratorStreamer

    kw = _gen_kwargs(cm, settings or {})
    device = next(cm.model.parameters()).device
    ids = torch.as_tensor([prompt_ids(cm, messages)], device=device)
    streamer = TextIteratorStreamer(cm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors: list[BaseException] = []

    def work():
        try:
            with torch.no_grad():
                cm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kw)
        except BaseException as exc:  # surfaced in the caller's thread
            errors.append(exc)
            streamer.end()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    yield from streamer
    t.join()
    if errors:
        raise errors[0]
