"""Using a trained run: load it back, predict and evaluate through its task (the task contract says how;
nothing here names a task)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneforge.errors import DataError, ModelError
from tuneforge.methods import MethodContext
from tuneforge.models.loader import load_model, read_run_metadata, resolve_model
from tuneforge.models.vocabulary_setup import check_embeddings, grow_for_run
from tuneforge.registry import METHODS, TASKS
from tuneforge.tasks.hooks import InferenceHooks


@dataclass
class LoadedRun:
    model: Any
    tokenizer: Any
    meta: dict
    model_dir: Path
    #: the run's method's `disabled_adapters` hook (`with run.without_adapters(run.model) as base:`), for tasks that
    #: compare with the base model (a preference run's reference); None for exports
    without_adapters: Any = None
    #: what the forward computes in on this device: fp32, or bf16 (CPU autocast, inference.precision)
    precision: str = "fp32"


def model_dir_of(path: str | Path) -> Path:
    """Accept a run directory or its model/ directory."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"run directory not found: {path}")
    if (p / "model" / "tuneforge.json").is_file():
        return p / "model"
    if (p / "tuneforge.json").is_file():
        return p
    status = p / "status.json"
    if status.is_file():
        state = json.loads(status.read_text()).get("state")
        raise ModelError(f"{path} has no trained model (run state: {state})")
    raise ModelError(f"{path} is not a tuneforge run directory (no model/tuneforge.json)")


def load_run(path: str | Path, device: str | None = None, precision: str | None = None) -> LoadedRun:
    """Load a run directory (or its model/ directory, or a `tuneforge export` output) with its tokenizer and
    metadata. `precision` (auto, fp32, bf16; None: TUNEFORGE_PRECISION, else auto): see inference.precision.
    Raises ModelError when it is not a finished run, ConfigError for a precision this machine cannot run."""
    from tuneforge.inference.exports import is_export, load_export

    if is_export(path):  # `tuneforge export` output: merged, int8 or ONNX
        return load_export(path, device)
    model_dir = model_dir_of(path)
    meta = read_run_metadata(model_dir)
    task_cls = TASKS.get(meta["task"])
    method_cls = METHODS.get(meta["method"])
    ctx = MethodContext(full_precision_modules=task_cls.full_precision_modules)

    def build_base(name_or_dir: str):
        # a model directory, or a name (builtin, GGUF, a finished run directory a run continued from: its model/)
        path = name_or_dir if (Path(name_or_dir) / "config.json").is_file() else resolve_model(name_or_dir)
        model = load_model(
            path,
            task_cls.auto_class(),
            meta.get("dtype", "auto"),
            **task_cls.inference.head_kwargs(meta),
            **method.load_kwargs(ctx),
        )
        if meta.get("keep_layers") and not getattr(model.config, "tuneforge_kept_layers", None):
            # a student cut from its base: the base loads whole, then loses the same blocks as in training
            from tuneforge.models.shrink import keep_layers

            keep_layers(model, list(meta["keep_layers"]))
        grow_for_run(model, meta)  # the rows of tokens the run added to its base's vocabulary
        return model

    # defined before use by build_base: the method decides how its base loads (for example 4-bit for QLoRA)
    method = method_cls(method_cls.Config.model_validate(meta.get("method_config") or {}))
    model = method.load(str(model_dir), build_base)
    model.eval()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    tokenizer = task_cls.inference.load_processor(str(model_dir))
    check_embeddings(model, tokenizer, str(path))
    return LoadedRun(
        model=model,
        tokenizer=tokenizer,
        meta=meta,
        model_dir=model_dir,
        without_adapters=method.disabled_adapters,
        precision=set_precision(model, task_cls.inference.cpu_bf16, device, precision),
    )


def set_precision(model, task_default: bool, device: str, precision: str | None) -> str:
    """Apply the precision a loaded model computes in (inference.precision; `task_default`: the task's
    `InferenceHooks.cpu_bf16`) and return it."""
    from tuneforge.config.environment import model_width
    from tuneforge.inference.precision import autocast_on_cpu, resolve

    resolved = resolve(precision, str(device), task_default, model_width(model))
    if resolved == "bf16":
        autocast_on_cpu(model)
    return resolved


def task_of(run: LoadedRun):
    """The task class of a loaded run (what it predicts, serves and exports)."""
    return TASKS.get(run.meta["task"])


def classify_logits(
    run: LoadedRun, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64
) -> np.ndarray:
    """Logits of a `classify` run for `texts` (and text pairs), in input order."""
    task = task_of(run)
    if task.inference.interface != "classify":
        raise ModelError(f"this run's task '{task.name}' does not classify texts")
    return task.inference.logits(run, list(texts), pairs, batch_size)


def predict(run_dir: str | Path | LoadedRun, texts: Iterable[str], batch_size: int = 64) -> list[dict]:
    """What the run's task predicts for each text (a classifier: label and per-class probabilities), or for each
    image (an image classifier: file paths, raw image bytes or PIL images).
    Raises ModelError for a run whose task does not predict (it chats), DataError for no texts or an unreadable
    image."""
    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    # a task that does not predict raises its own one-line reason; a classifier refuses an empty list
    return task_of(run).inference.predict(run, list(texts), batch_size)


def score(run_dir: str | Path | LoadedRun, prompts: list, completions: list[str], batch_size: int = 64) -> list[float]:
    """The reward of each completion as the answer to its prompt (a text, or a list of `{"role", "content"}` messages
    ending with the user's turn), from a run whose task scores answers (a reward model), scored as the run was
    trained (its chat template and system prompt). Raises ModelError for a run that does not score, DataError for
    prompts and completions of different lengths."""
    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    return task_of(run).inference.score(run, list(prompts), list(completions), batch_size)


def run_scorer(run_dir: str | Path, device: str | None = None):
    """`score` with the run loaded once: a function (prompts, completions) -> rewards, for a training run that uses
    a finished reward run as a reward (GRPO's `task.rewards: [{run: ...}]`). Prints one line when it loads."""
    import sys

    run = load_run(run_dir, device=device)
    print(f"tuneforge: reward run {run_dir} loaded ({run.meta.get('base_model')})", file=sys.stderr, flush=True)

    def scorer(prompts: list, completions: list[str]) -> list[float]:
        with torch.no_grad():
            return score(run, prompts, completions)

    return scorer


def evaluate(
    run_dir: str | Path,
    data: str | None = None,
    out_dir: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> dict:
    """Evaluate a trained run on labelled data; writes metrics.json, report.md and the confusion matrix into
    out_dir (default RUN/eval/<data file stem>). Without `data`: the run's own test split, as saved in
    RUN/data/split/ (the rows training held out; runs from before splits were saved need `data`)."""
    from tuneforge.data.splits import split_file

    run = load_run(run_dir)
    task = task_of(run)
    if type(task.inference).evaluate is InferenceHooks.evaluate:  # the task does not evaluate (it refuses in one line)
        task.inference.evaluate(run, data or "", out_dir)
    run_root = run.model_dir.parent
    if data is None:
        saved = split_file(run_root, "test")
        if saved is None:
            raise DataError(
                f"{run_dir} has no saved test split (it held none out, or predates saved splits): pass --data FILE"
            )
        data = str(saved)
        default_out = run_root / "eval" / "test-split"
    else:
        default_out = run_root / "eval" / Path(data).stem.replace(":", "-")
    return task.inference.evaluate(run, data, Path(out_dir) if out_dir else default_out, text_column, label_column)
