"""What the server talks to, by the interface the run's task declares (`Task.inference.interface`): `classify` (texts ->
labels and probabilities) or `chat` (messages -> an answer), loaded from a run directory or an exported
directory. Several runs of one base model and task (`load_backends`) are one backend each, on one shared base
model where their methods allow (tuneforge.inference.adapters); each backend switches its run's adapter on
before it computes, on the model thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuneforge.errors import ConfigError, ModelError


class ClassifierBackend:
    """A run whose task classifies texts (`interface = "classify"`): texts in, label and probabilities out."""

    interface = "classify"

    def __init__(self, run, name: str, activate: Callable[[], None] | None = None):
        """`activate`: switches this run's adapter on in a model shared with other runs (None: its own model)."""
        from tuneforge.inference import task_of

        self.run = run
        self.name = name
        self.kind = run.meta["task"]  # what /health reports
        self.labels = run.meta.get("labels")  # as the task saved them (a list, or per subtask)
        self.task = task_of(run)
        self.activate = activate

    def classify(self, texts: list) -> list[dict]:
        """What the task predicts for each text (or image: bytes), without the input (runs on the model worker "
        "thread)."""
        if self.activate is not None:
            self.activate()
        return [
            {k: v for k, v in r.items() if k not in ("text", "image")}
            for r in self.task.inference.predict(self.run, texts, batch_size=max(1, len(texts)))
        ]


def counting_streamer(tokenizer, timeout: float):
    """A TextIteratorStreamer that also keeps the generated token ids, for usage counts."""
    from transformers import TextIteratorStreamer

    class Streamer(TextIteratorStreamer):
        def __init__(self):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
            self.token_ids: list[int] = []

        def put(self, value):
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                self.token_ids.extend(int(t) for t in value.reshape(-1).tolist())
            super().put(value)

    return Streamer()


@dataclass
class ChatResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ChatBackend:
    cm: Any
    name: str
    context_length: int
    kind: str = "chat"
    interface: str = "chat"
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: switches this run's adapter on in a model shared with other runs (None: its own model)
    activate: Callable[[], None] | None = None

    def prompt(self, messages: list[dict]) -> list[int]:
        from tuneforge.generation import prompt_ids

        return prompt_ids(self.cm, messages)

    def _kwargs(self, settings: dict, stop: list[str], prompt_len: int, cancel: threading.Event | None = None) -> dict:
        from transformers import StoppingCriteria, StoppingCriteriaList

        from tuneforge.generation import _gen_kwargs

        kw = _gen_kwargs(self.cm, settings)
        kw["max_new_tokens"] = min(kw["max_new_tokens"], self.context_length - prompt_len)
        criteria = []
        if stop:
            tok = self.cm.tokenizer

            # checked on the decoded tail: stop strings need not align with token boundaries
            class StopOnText(StoppingCriteria):
                def __call__(self, input_ids, scores, **_):
                    tail = tok.decode(input_ids[0, prompt_len:][-32:], skip_special_tokens=True)
                    return torch.full((input_ids.shape[0],), any(s in tail for s in stop), dtype=torch.bool)

            criteria.append(StopOnText())
        if cancel is not None:
            # the client went away (a stream's reader disconnected): free the model for the next request
            class StopOnCancel(StoppingCriteria):
                def __call__(self, input_ids, scores, **_):
                    return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

            criteria.append(StopOnCancel())
        if criteria:
            kw["stopping_criteria"] = StoppingCriteriaList(criteria)
        return kw

    def complete(
        self,
        messages: list[dict],
        settings: dict,
        stop: list[str],
        seed: int | None = None,
        streamer=None,
        cancel: threading.Event | None = None,
    ) -> ChatResult:
        """Generate one answer (runs on the model worker thread).

        Args:
            messages: the conversation, ending with a user turn.
            settings: temperature, top_p, max_new_tokens (None keeps the run's defaults).
            stop: strings that end the answer (not included in it).
            seed: seed for sampling.
            streamer: a streamer from `make_streamer` to receive the text as it is generated.
            cancel: when set (by another thread), generation stops after the current token.
        Raises ConfigError for invalid sampling settings."""
        ids = self.prompt(messages)
        kw = self._kwargs(settings, stop, len(ids), cancel)
        if self.activate is not None:
            self.activate()
        if seed is not None:
            torch.manual_seed(seed)
        device = next(self.cm.model.parameters()).device
        inp = torch.as_tensor([ids], device=device)
        with torch.no_grad():
            out = self.cm.model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), streamer=streamer, **kw)
        gen = out[0, len(ids) :].tolist()
        stops = set(self.cm.stop_token_ids)
        cut = next((i for i, t in enumerate(gen) if t in stops), None)
        toks = gen if cut is None else gen[:cut]
        text = self.cm.tokenizer.decode(toks, skip_special_tokens=True)
        finish = "length" if cut is None else "stop"
        hit = [text.index(s) for s in stop if s in text]
        if hit:
            text, finish = text[: min(hit)], "stop"
        return ChatResult(text.strip(), finish, len(ids), len(toks))

    def make_streamer(self, timeout: float = 120.0):
        return counting_streamer(self.cm.tokenizer, timeout)


def load_backend(target: str, device: str | None = None):
    """Load a run (or an exported directory) for serving, by its task's interface (classify or chat).

    Args:
        target: run directory, its model/ directory, or a `tuneforge export` output directory.
        device: torch device (default: cuda when available).
    Raises ModelError when the target is missing or not a servable model."""
    from tuneforge.inference import load_run, model_dir_of

    p = Path(target)
    if (
        p.is_dir()
        and (p / "config.json").is_file()
        and not (p / "tuneforge.json").is_file()
        and not (p / "model" / "tuneforge.json").is_file()
    ):
        # a plain transformers directory (a base model, or a merged export copied elsewhere): chat with it as is
        from tuneforge.generation import load_chat_model

        cm = load_chat_model(str(target), device=device)
        ctx = getattr(cm.model.config, "max_position_embeddings", None) or 2048
        return ChatBackend(cm, p.resolve().name, int(ctx))
    model_dir = model_dir_of(target)
    from tuneforge.models.loader import read_run_metadata
    from tuneforge.registry import TASKS

    meta = read_run_metadata(model_dir)
    name = Path(target).resolve().name
    interface = TASKS.get(meta["task"]).inference.interface
    if interface == "classify":
        return ClassifierBackend(load_run(target, device=device), name)
    if interface == "chat":
        from tuneforge.generation import load_chat_model

        cm = load_chat_model(str(target), device=device)
        ctx = getattr(getattr(cm.model, "config", None), "max_position_embeddings", None) or 2048
        return ChatBackend(cm, name, int(ctx))
    raise ModelError(
        f"{target}: serving a '{meta['task']}' run is not supported (its task's interface "
        f"'{interface}' has no HTTP API)"
    )


def load_backends(targets: list[str], device: str | None = None) -> list:
    """Load one or more runs for one server: one target is `load_backend` (exactly); several are runs of one base
    model and task type, loaded by `tuneforge.inference.adapters.load_runs` (one shared base model where the
    methods allow), one backend each, named by their directories, the first the default.

    Args:
        targets: run directories (or their model/ directories, or exports).
        device: torch device (default: cuda when available).
    Raises ModelError for a target that is not a servable run, or runs of different task types or base models."""
    if len(targets) == 1:
        return [load_backend(targets[0], device=device)]
    from tuneforge.inference.adapters import chat_model_of, load_runs
    from tuneforge.registry import TASKS

    for t in targets:
        p = Path(t)
        if (
            p.is_dir()
            and (p / "config.json").is_file()
            and not (p / "tuneforge.json").is_file()
            and not (p / "model" / "tuneforge.json").is_file()
        ):
            raise ModelError(
                f"{t} is a plain model directory, not a tuneforge run: several targets must be runs "
                f"(a base model directory can be served alone)"
            )
    runs = load_runs(list(targets), device=device)
    meta = runs[0].run.meta
    interface = TASKS.get(meta["task"]).inference.interface
    if interface == "classify":
        return [ClassifierBackend(r.run, r.name, activate=r.activate if r.shared else None) for r in runs]
    if interface == "chat":
        backends = []
        for r in runs:
            cm = chat_model_of(r)
            ctx = getattr(getattr(cm.model, "config", None), "max_position_embeddings", None) or 2048
            backends.append(ChatBackend(cm, r.name, int(ctx), activate=r.activate if r.shared else None))
        return backends
    raise ModelError(
        f"{targets[0]}: serving a '{meta['task']}' run is not supported (its task's interface "
        f"'{interface}' has no HTTP API)"
    )


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to expose a model on a non-loopback address without an API key.

    Raises ConfigError when `host` is not loopback, no API key is set and `insecure` is False."""
    if not is_loopback(host) and not api_key and not insecure:
        raise ConfigError(
            f"refusing to bind {host} without an API key: anyone on the network could use the "
            f"model. Pass --api-key KEY (or --insecure to do it anyway)"
        )
