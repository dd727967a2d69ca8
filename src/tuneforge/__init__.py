"""tuneforge: fine-tune pretrained transformers from one YAML config.

The Python API, one function per command of the CLI (which is a thin layer over these), named like the command:

    import tuneforge
    result = tuneforge.train("configs/quickstart/sentiment-minilm-lora.yaml", ["train.epochs=1"])
    tuneforge.predict(result.run_dir, ["a gripping, beautifully shot film"])
    tuneforge.evaluate(result.run_dir, "new_labelled.csv")
    tuneforge.export(result.run_dir, "onnx", "exports/sentiment-onnx")
    tuneforge.estimate("configs/quickstart/identity-smollm2-lora.yaml", gpu="4090")
    tuneforge.compare("configs/quickstart/sentiment-minilm-lora.yaml", methods="full,lora", max_steps=60)
    tuneforge.search("configs/quickstart/sentiment-minilm-lora.yaml",
                     "configs/search/sentiment-minilm-lora-space.yaml", ["train.max_steps=60"], trials=20)
    tuneforge.chat("runs/identity", "What is your name?")

Every function raises tuneforge.errors.TuneforgeError subclasses (ConfigError, DataError, ModelError, ...) with a
one-line message for problems the caller can fix.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the API imports the heavy modules only when a function is called
    from tuneforge.compare.runner import CompareResult
    from tuneforge.config.schema import RunConfig
    from tuneforge.inference import LoadedRun
    from tuneforge.search.study import SearchResult
    from tuneforge.training.engine import TrainResult

__version__ = "0.1.0"

PathLike = str | os.PathLike


def train(
    config: PathLike | RunConfig, overrides: Sequence[str] = (), resume: bool = False, force: bool = False
) -> TrainResult:
    """Train as `config` (a YAML file or a loaded RunConfig) says, with `key=value` overrides, and write a run
    directory (`tuneforge train`). `resume` continues the unfinished run in output.dir from its last checkpoint;
    `force` turns overridable data checks (such as the chat-template check) into warnings.
    Returns the run directory, its metrics and its efficiency figures."""
    from tuneforge.training.engine import train as _train

    return _train(config, list(overrides), resume=resume, force=force)


def load_config(path: PathLike | None = None, overrides: Sequence[str] = (), raw: dict | None = None) -> RunConfig:
    """The validated run config of a YAML file (or of a `raw` dict) with `key=value` overrides (`tuneforge
    validate`). Raises ConfigError naming the key for anything the run would refuse."""
    from tuneforge.config import load_config as _load

    return _load(path, list(overrides), raw)


def predict(run_dir: PathLike | LoadedRun, inputs: Sequence[Any], batch_size: int = 64) -> list[dict]:
    """What a finished run predicts for each input (`tuneforge predict`): texts for a text classifier (label and
    per-class probabilities), image paths, bytes or PIL images for an image classifier. `run_dir` may be a run
    loaded once with `load_run` and reused."""
    from tuneforge.inference import predict as _predict

    return _predict(run_dir, list(inputs), batch_size)


def evaluate(
    run_dir: PathLike,
    data: PathLike | None = None,
    out_dir: PathLike | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> dict:
    """Metrics of a run on labelled `data` (default: the run's own saved test split), with the report written
    into `out_dir` (default RUN/eval/<data name>) (`tuneforge eval`)."""
    from tuneforge.inference import evaluate as _evaluate

    return _evaluate(run_dir, None if data is None else str(data), out_dir, text_column, label_column)


def load_run(run_dir: PathLike) -> LoadedRun:
    """A finished run (or an export) loaded once: its model, tokenizer or image processor, and metadata."""
    from tuneforge.inference import load_run as _load_run

    return _load_run(run_dir)


def chat(target: PathLike, messages: str | list[dict], **settings: Any) -> str:
    """One answer from a chat run, a local causal-LM directory or a builtin alias to `messages` (a string or a list
    of `{"role", "content"}` dicts) (`tuneforge chat --message`). `settings`: temperature, top_p, max_new_tokens,
    repetition_penalty."""
    from tuneforge.generation import generate, load_chat_model

    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    return generate(load_chat_model(str(target)), [msgs], settings)[0]["response"]


def export(
    run_dir: PathLike,
    format: str,
    out_dir: PathLike,
    overwrite: bool = False,
    max_samples: int = 2000,
    bench: bool = True,
) -> dict:
    """Export a finished run (`tuneforge export`): `format` is merged, onnx, int8 or onnx-int8 (what the run's task
    allows). Measures parity with the trained model on its test split, size and, with `bench`, CPU speed; returns
    that report (also written to OUT/export.json)."""
    from tuneforge.export.exporter import export_run

    return export_run(run_dir, format, out_dir, overwrite=overwrite, max_samples=max_samples, bench=bench)


def estimate(
    config: PathLike,
    overrides: Sequence[str] = (),
    gpu: str | None = None,
    memory: str | None = None,
    nproc: int = 1,
    strategy: str = "ddp",
) -> dict:
    """The peak GPU memory per device of training `config` (`tuneforge estimate`): the estimate's parts, and with a
    `gpu` name or a `memory` size (e.g. "24GiB") whether it fits and the cheapest changes that make it fit."""
    from tuneforge.training.estimate import fit_report

    return fit_report(config, list(overrides), gpu=gpu, memory=memory, nproc=nproc, strategy=strategy).to_dict()


def compare(
    config: PathLike,
    methods: Sequence[str] | str = "full,lora",
    seeds: Sequence[int] | str | None = None,
    max_steps: int | None = None,
    out: PathLike | None = None,
    overrides: Sequence[str] = (),
    **options: Any,
) -> CompareResult:
    """Train the same task, data and budget with several methods (x seeds) and write the measured comparison
    (`tuneforge compare`). `options`: resume, overwrite, method_configs, keep_learning_rate, isolate (False
    trains in this process), vary (`KEY=V1,V2,...`: also compare the values of one config key)."""
    from tuneforge.compare import compare as _compare

    seeds = list(seeds) if seeds is not None and not isinstance(seeds, str) else seeds
    methods = list(methods) if not isinstance(methods, str) else methods
    return _compare(config, methods, seeds, max_steps, out, list(overrides), **options)


def search(config: PathLike, space: PathLike, overrides: Sequence[str] = (), **options: Any) -> SearchResult:
    """A hyperparameter search (Optuna) over `space` (a YAML file of config keys and the values to try), each trial
    a run of `config` (`tuneforge search`). `options`: trials, timeout, study, study_dir, storage, workers,
    sampler, pruner, objectives, seed."""
    from tuneforge.search import make_plan
    from tuneforge.search import search as _search

    return _search(make_plan(str(config), str(space), list(overrides), **options))


__all__ = [
    "__version__",
    "chat",
    "compare",
    "estimate",
    "evaluate",
    "export",
    "load_config",
    "load_run",
    "predict",
    "search",
    "train",
]


class _API(types.ModuleType):
    """Three API functions are named like the subpackages that do the work (`export`, `compare`, `search`): when a
    submodule such as `tuneforge.search.plan` is imported, Python binds the loaded subpackage as an attribute of its
    parent, which would replace `tuneforge.search` the function with the module (a second call would fail with
    "'module' object is not callable"). The functions keep their names; the subpackages stay importable by their
    dotted names (`from tuneforge.search import make_plan`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and callable(self.__dict__.get(name)):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _API
