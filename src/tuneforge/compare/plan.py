"""The plan of `tuneforge compare`: which runs a comparison trains (methods x values of one --vary key x seeds), each
with its complete raw config and run directory, and how each method's settings and learning rate are chosen
(compare/runner.py trains them).

Learning rate: per method. A config's `train.learning_rate` is written for *its* method (the LoRA quickstart
sets 1e-3, which would wreck full fine-tuning), so compare drops it and every method trains at its own
rate: `train.learning_rate` from configs/methods/<method>-<task>.yaml when that file sets one, else the
method's default. An explicit `train.learning_rate=...` override on the compare command line, or
`keep_learning_rate`, applies one rate to every method."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.overrides import apply_overrides
from tuneforge.config.validation import validate_config
from tuneforge.config.yaml_reader import read_yaml
from tuneforge.errors import ConfigError

ALL_METHODS = ["full", "freeze", "lora", "qlora", "adapter", "prefix", "prompt"]


@dataclass
class PlannedRun:
    method: str
    seed: int
    path: Path
    raw: dict  # the complete raw config of this run (validated when it runs)
    variant: str | None = None  # `KEY=VALUE` of --vary, when the comparison varies a config key
    error: str | None = None  # a config problem found while planning: the run fails without training
    skipped: bool = False


def parse_list(text: str | None, what: str) -> list[str]:
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{what}: give a comma-separated list, for example {what} full,lora")
    dup = sorted({x for x in items if items.count(x) > 1})
    if dup:
        raise ConfigError(f"{what}: listed twice: {', '.join(dup)}")
    return items


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    seeds = []
    for s in parse_list(text, "--seeds"):
        try:
            seeds.append(int(s))
        except ValueError:
            raise ConfigError(f"--seeds: '{s}' is not an integer") from None
    return seeds


def parse_vary(text: str | None) -> tuple[str, list[str]] | None:
    """`--vary KEY=V1,V2,...` as (KEY, [V1, V2, ...]): one config key that differs between the compared runs (every
    value is trained with every method and seed). ConfigError for a malformed one or `method.name` (--methods)."""
    if text is None:
        return None
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--vary: '{text}' is not KEY=V1,V2,... (for example --vary task.loss=dpo,orpo,simpo)")
    if key == "method.name":
        raise ConfigError("--vary: methods are compared with --methods, not --vary method.name")
    return key, parse_list(values, f"--vary {key}=")


def default_method_configs_dir() -> Path:
    """configs/methods under the working directory, else the one shipped beside the package's source tree."""
    here = Path("configs/methods")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "configs" / "methods"


def task_file_names(task: str) -> list[str]:
    """The names method files use for a task: its own and its `Task.aliases` (lora-sft.yaml for causal_lm)."""
    from tuneforge.registry import TASKS

    return [task, *TASKS.get(task).aliases] if task in TASKS else [task]


def _method_file_settings(method: str, task: str, directory: Path) -> tuple[dict | None, float | None, Path | None]:
    path = next((p for p in (directory / f"{method}-{t}.yaml" for t in task_file_names(task)) if p.is_file()), None)
    if path is None:
        return None, None, None
    raw = read_yaml(path)
    section = raw.get("method")
    if section is None:
        return None, None, path
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'method' must be a mapping")
    if section.get("name", method) != method:
        raise ConfigError(f"{path}: method.name is '{section.get('name')}', but the file is for '{method}'")
    lr = (raw.get("train") or {}).get("learning_rate") if isinstance(raw.get("train"), dict) else None
    return {**section, "name": method}, lr, path


def plan(
    config: str | Path,
    methods: list[str],
    seeds: list[int] | None,
    max_steps: int | None,
    out: Path,
    overrides=(),
    method_configs: Path | None = None,
    keep_learning_rate: bool = False,
    vary: tuple[str, list[str]] | None = None,
) -> list[PlannedRun]:
    """The runs of a comparison, each with its complete raw config (nothing is trained or written).

    Each method's settings: the `method:` section of <method_configs>/<method>-<task>.yaml when it exists;
    else the config's own `method:` section when it names this method or all its keys apply to it; else
    the method's defaults.

    Args:
        config: the base run config (task, data, model, budget).
        methods: registered method names.
        seeds: train.seed of each repetition; None: the config's own seed, once. The data split keeps the
            config's seed (data.split.seed, else train.seed), so all runs share the same test rows.
        max_steps: train.max_steps for every run (None: the config's budget).
        out: the comparison directory; run k of method m goes to out/<m>-seed<k>.
        overrides: key=value overrides for every run. `method.<key>=v` applies to the methods that have
            that key (for example method.r=4 to lora and qlora).
        method_configs: the directory of <method>-<task>.yaml files (default configs/methods).
        keep_learning_rate: train every method at the config's train.learning_rate instead of per-method rates.
        vary: (KEY, values): every method is also trained with each value of the config key KEY (for example
            task.loss over dpo, orpo, simpo); run k of method m and value v goes to out/<m>-<v>-seed<k>.

    Raises ConfigError for an unknown method, a malformed override or an invalid base config."""
    from tuneforge.registry import METHODS

    for m in methods:
        METHODS.get(m, key="--methods")
    overrides = list(overrides)
    method_over = [o for o in overrides if o.split("=", 1)[0].strip().startswith("method.")]
    common = [o for o in overrides if o not in method_over]
    base = apply_overrides(read_yaml(config), common)
    base_cfg = validate_config(copy.deepcopy(base))  # problems of the shared part stop everything, early
    task = base_cfg.task.type
    explicit_lr = any(o.split("=", 1)[0].strip() == "train.learning_rate" for o in common)
    for o in method_over:
        key = o.split("=", 1)[0].strip().split(".")[1]
        if "=" not in o or not any(key in METHODS.get(m).Config.model_fields for m in methods):
            raise ConfigError(f"override '{o}': none of the methods {', '.join(methods)} has a key '{key}'")
    directory = method_configs or default_method_configs_dir()
    base_method = base.get("method") if isinstance(base.get("method"), dict) else {}
    runs = []
    for m in methods:
        section, file_lr, _ = _method_file_settings(m, task, directory)
        fields = METHODS.get(m).Config.model_fields
        if section is None:
            # the config's own settings when they were written for this method or all apply to it (a LoRA
            # config's r/alpha/targets carry over to qlora), else the method's defaults
            own = {k: v for k, v in base_method.items() if k != "name"}
            reuse = base_method.get("name") == m or (own and all(k in fields for k in own))
            section = {**(copy.deepcopy(own) if reuse else {}), "name": m}
        mine = [o for o in method_over if o.split("=", 1)[0].strip().split(".")[1] in fields]
        section = apply_overrides({"method": section}, mine)["method"]
        for variant, seed in [
            (v, seed) for v in (vary[1] if vary else [None]) for seed in (seeds or [base_cfg.train.seed])
        ]:
            raw = copy.deepcopy(base) if variant is None else _variant(base, task, vary[0], variant)
            raw["method"] = copy.deepcopy(section)
            train = raw.setdefault("train", {}) or {}
            raw["train"] = train
            if not (explicit_lr or keep_learning_rate):
                train.pop("learning_rate", None)
                if file_lr is not None:
                    train["learning_rate"] = file_lr
            train["seed"] = seed
            if seeds is not None and base_cfg.data.split.seed is None:
                # one held-out split for every seed: the spread then measures training randomness, and every
                # method is scored on the same test rows
                data = raw["data"] = dict(raw.get("data") or {})
                data["split"] = {**(data.get("split") or {}), "seed": base_cfg.train.seed}
            if max_steps is not None:
                train["max_steps"] = max_steps
            name = f"{m}-seed{seed}" if variant is None else f"{m}-{_slug(variant)}-seed{seed}"
            path = out / name
            raw["output"] = {**(raw.get("output") or {}), "dir": str(path), "name": name, "overwrite": True}
            shown = None if variant is None else f"{vary[0]}={variant}"
            runs.append(PlannedRun(method=m, seed=seed, path=path, raw=raw, variant=shown))
    for r in runs:
        try:
            validate_config(copy.deepcopy(r.raw))
        except ConfigError as exc:
            r.error = str(exc)
    return runs


def _variant(base: dict, task: str, key: str, value: str) -> dict:
    """`base` with KEY=VALUE; a `task.<key>` goes through the task config's `for_variant`, which drops the keys that
    no longer apply (a preference loss's own parameters), with one line per key dropped."""
    from tuneforge.registry import TASKS

    raw = apply_overrides(base, [f"{key}={value}"])
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "task" and parts[1] != "type" and isinstance(raw.get("task"), dict):
        section, notes = TASKS.get(task).Config.for_variant(dict(base.get("task") or {}), raw["task"], parts[1])
        raw["task"] = section
        for note in notes:
            print(f"compare: {key}={value}: {note}", file=sys.stderr)
    return raw


def _slug(value: str) -> str:
    """A config value as a piece of a directory name."""
    return "".join(c if c.isalnum() or c in "._" else "-" for c in value).strip("-") or "value"
