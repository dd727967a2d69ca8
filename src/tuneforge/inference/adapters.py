"""Several runs in one process: runs trained from the same base model for the same task share one copy of that
base, each run's adapter loaded beside the others (PEFT multi-adapter), and the adapter of the run that answers
is switched on before each forward pass.

Which runs can share is the method's to say (`Method.shared_base_key`, tuneforge.methods.base): adapters of one
kind (PEFT LoRA with LoRA, IA3 with IA3, ...) whose base loads the same way (dtype, quantization, kept layers)
share; a run whose method saves the whole model (full, freeze), tuneforge's own bottleneck adapters, an export,
or an adapter of another kind loads on its own model, in the same process, with a note on stderr.

Runs from different base models or of different task types are refused (ModelError, one line naming both runs):
one server (or one `predict` / `chat` call) holds runs of one base model and one task.

Switching adapters changes the shared model, so a caller must call `ServedRun.activate()` and then run the
forward pass without another run's forward pass in between (the server's single model thread does exactly that).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.errors import MethodError, ModelError
from tuneforge.inference import LoadedRun, load_run, model_dir_of
from tuneforge.inference.chat import chat_model_of as run_chat_model
from tuneforge.methods.base import DEFAULT_ADAPTER
from tuneforge.models.generation import ChatModel
from tuneforge.models.loader import read_run_metadata
from tuneforge.registry import METHODS, TASKS


@dataclass
class ServedRun:
    """One run of a `load_runs` call.

    name        its name (its directory name, with a suffix when two are equal): the OpenAI `model` field, `--run`
    path        the path it was loaded from
    run         the loaded run; `run.model` is shared with the other runs of its `group`
    group       index of the model it computes on (runs with equal groups share one base model)
    """

    name: str
    path: str
    run: LoadedRun
    group: int
    _activate: Callable[[], None] | None = None

    @property
    def shared(self) -> bool:
        """Whether this run's model holds other runs' adapters too."""
        return self._activate is not None

    def activate(self) -> None:
        """Make this run's adapter the one that computes (no-op for a run on its own model). Call it right before
        each forward pass, on the thread that runs them."""
        if self._activate is not None:
            self._activate()


def run_names(paths: list[str]) -> list[str]:
    """Each path's directory name (a run's `model/` directory counts as its run), unique: a name that repeats gets
    `-2`, `-3`, ... from its second occurrence on."""
    names, seen = [], {}
    for p in paths:
        resolved = Path(p).resolve()
        base = (
            resolved.parent.name
            if resolved.name == "model" and (resolved / "tuneforge.json").is_file()
            else resolved.name
        )
        base = base or "run"
        n = seen.get(base, 0) + 1
        seen[base] = n
        name = base if n == 1 else f"{base}-{n}"
        while name in names:  # `a-2` given as a directory name too
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _base_of(meta: dict) -> str:
    base = str(meta.get("base_model") or "")
    p = Path(base)
    return str(p.resolve()) if base and p.exists() else base


def read_metas(paths: list[str]) -> list[dict]:
    """The saved metadata (model/tuneforge.json) of each run, checked to be servable together.

    Raises ModelError when a path is not a run, or for the first two runs with different task types or different
    base models (one line naming both)."""
    if not paths:
        raise ModelError("no runs given")
    metas = [read_run_metadata(model_dir_of(p)) for p in paths]
    first, m0 = paths[0], metas[0]
    for p, m in zip(paths[1:], metas[1:]):
        if m.get("task") != m0.get("task"):
            raise ModelError(
                f"cannot load {first} and {p} together: {first} is a '{m0.get('task')}' run and {p} a "
                f"'{m.get('task')}' run (runs loaded together must have one task type)"
            )
        if _base_of(m) != _base_of(m0):
            raise ModelError(
                f"cannot load {first} and {p} together: {first} was trained from base model "
                f"'{m0.get('base_model')}' and {p} from '{m.get('base_model')}' (runs loaded "
                f"together must share one base model)"
            )
    return metas


def _note(message: str) -> None:
    print(f"tuneforge: {message}", file=sys.stderr, flush=True)


def load_runs(paths: list[str], device: str | None = None, note: Callable[[str], None] = _note) -> list[ServedRun]:
    """Load several runs of one base model and task, sharing the base model where their methods allow.

    Args:
        paths: run directories (or their model/ directories, or exports), in order; the first is the default.
        device: torch device (default: cuda when available).
        note: receives one line per run that loads on its own model, and why.
    Returns one ServedRun per path, in order.
    Raises ModelError for a path that is not a finished run, or runs of different task types or base models."""
    from tuneforge.inference.exports import is_export

    metas = read_metas(paths)
    names = run_names(paths)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # key -> (group index, shared model, method of the first run: it switches adapters in that model)
    groups: dict[object, tuple[int, object, object]] = {}
    served: list[ServedRun] = []
    n_groups = 0

    def alone(i: int, why: str | None) -> None:
        nonlocal n_groups
        if why and len(paths) > 1:
            note(f"{names[i]} loads on its own model ({why})")
        served.append(ServedRun(names[i], paths[i], load_run(paths[i], device=device), n_groups))
        n_groups += 1

    for i, (path, meta) in enumerate(zip(paths, metas)):
        if is_export(path):
            alone(i, "an export holds a whole model")
            continue
        model_dir = model_dir_of(path)
        method_cls = METHODS.get(meta["method"])
        method = method_cls(method_cls.Config.model_validate(meta.get("method_config") or {}))
        kind = method.shared_base_key(str(model_dir))
        if kind is None:
            alone(i, f"method '{meta['method']}' saved no adapter that can share a base model")
            continue
        # a run that added tokens to its vocabulary grew its base's embeddings: it shares only with the same tokens
        vocabulary = [d.get("tokens") for d in meta.get("vocabulary") or []]
        key = (kind, meta.get("dtype", "auto"), json.dumps(meta.get("keep_layers")), json.dumps(vocabulary))
        if key not in groups:
            if groups:
                note(
                    f"{names[i]} loads its own copy of the base model (its adapter is of another kind, or its base "
                    f"loads with other settings, than those loaded before it)"
                )
            run = load_run(path, device=device)
            groups[key] = (n_groups, run.model, method)
            served.append(ServedRun(names[i], path, run, n_groups))
            n_groups += 1
            continue
        group, model, first_method = groups[key]
        adapter = f"run{i}"  # PEFT module names may not hold dots: never the run's own name
        try:
            method.load_extra(model, str(model_dir), adapter)
        except MethodError as exc:  # this run still loads, on its own
            alone(i, f"its adapter could not join the shared base model: {exc}")
            continue
        model.to(device)
        run = LoadedRun(
            model=model,
            tokenizer=TASKS.get(meta["task"]).inference.load_processor(str(model_dir)),
            meta=meta,
            model_dir=model_dir,
        )
        served.append(ServedRun(names[i], path, run, group, _switch(first_method, model, adapter)))

    # the first run of a group that others joined switches back to its own adapter before each pass
    joined = {s.group for s in served if s.shared}
    first_methods = {g: m for g, _, m in groups.values()}
    for s in served:
        if s.group in joined and not s.shared:
            s._activate = _switch(first_methods[s.group], s.run.model, DEFAULT_ADAPTER)
    return served


def _switch(method, model, adapter: str) -> Callable[[], None]:
    return lambda: method.activate(model, adapter)


def chat_model_of(served: ServedRun, template: str | None = None) -> ChatModel:
    """A ChatModel over a loaded chat run (tuneforge.inference.chat.chat_model_of).
    Raises ModelError when the run's task does not chat; ConfigError for a template that does not fit."""
    return run_chat_model(served.run, served.path, template)


def is_run_path(path: str) -> bool:
    """Whether `path` is a directory that holds a tuneforge model (a run, its model/ directory, an export)."""
    p = Path(path)
    try:
        return (p / "model" / "tuneforge.json").is_file() or (p / "tuneforge.json").is_file()
    except (OSError, ValueError):  # a text that is no possible path
        return False


def predict_runs(paths: list[str], texts: list[str], run: str | None = None, batch_size: int = 64) -> list[dict]:
    """Predict `texts` with several runs loaded together (`load_runs`).

    Args:
        paths: run directories of one base model and task.
        texts: the texts.
        run: the name of the run that answers (see `run_names`); None: every run answers.
        batch_size: texts per forward pass.
    Returns with `run`: that run's predictions, as `tuneforge.inference.predict` gives them; without: one row per
    text, {"text": text, "runs": {name: that run's prediction without the text}}.
    Raises ConfigError for an unknown `run`; ModelError as `load_runs`; DataError for no texts."""
    from tuneforge.errors import ConfigError
    from tuneforge.inference import predict

    names = run_names(paths)
    if run is not None and run not in names:
        raise ConfigError(f"--run: no run named '{run}' (runs: {', '.join(names)})")
    runs = load_runs(paths)
    rows: dict[str, list[dict]] = {}
    for r in runs:
        if run is not None and r.name != run:
            continue
        r.activate()
        rows[r.name] = predict(r.run, texts, batch_size)
    if run is not None:
        return rows[run]
    return [
        {"text": t, "runs": {name: {k: v for k, v in preds[i].items() if k != "text"} for name, preds in rows.items()}}
        for i, t in enumerate(texts)
    ]


def load_chat_runs(paths: list[str], template: str | None = None, device: str | None = None) -> list[tuple]:
    """Several chat runs of one base model loaded together (`load_runs`): (ServedRun, ChatModel) per path, in
    order. Call `ServedRun.activate()` before generating with its ChatModel.
    Raises ModelError as `load_runs`, or when the runs do not chat; ConfigError for a template that does not fit."""

    metas = read_metas(paths)
    if TASKS.get(metas[0]["task"]).inference.interface != "chat":
        raise ModelError(
            f"{paths[0]} is a '{metas[0]['task']}' run, which does not chat; chat needs runs whose "
            f"task generates text (use `tuneforge predict` for these)"
        )
    return [(r, chat_model_of(r, template)) for r in load_runs(paths, device=device)]
