"""Strict validation of a raw config mapping into a RunConfig: `task`, `method` and `data` against the classes of
the registered task and method they name, cross-field checks, and every problem as `key.path: what is wrong`."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from tuneforge.config.messages import join_errors, key_text, shorten
from tuneforge.config.schema import DataSection, RunConfig
from tuneforge.errors import ConfigError
from tuneforge.registry import closest

#: what `task.type` / `method.name` are when a config does not name them
DEFAULT_TASK = "classification"
DEFAULT_METHOD = "lora"


def _fields_at(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)model reached by following `loc` from `model_cls`."""
    cls = model_cls
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        ann = field.annotation
        if typing.get_origin(ann) is dict and parts:  # named sections (multi-task sub-tasks): skip the name
            parts.pop(0)
            ann = typing.get_args(ann)[1]
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                cls = candidate
                break
        else:
            return []
    return list(cls.model_fields)


#: pydantic's names of union members and validator functions inside an error location (not keys of the config)
_UNION_TAG = re.compile(
    r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-.*|"
    r"constrained-.*|json-or-python\[.*\])$"
)


def _format_errors(exc: ValidationError, model_cls: type[BaseModel], prefix: tuple = ()) -> list[str]:
    lines: list[str] = []
    union: dict[str, int] = {}  # path -> index in lines, to merge the failures of one value against a union
    for err in exc.errors():
        tags = [p for p in err["loc"] if isinstance(p, str) and _UNION_TAG.match(p)]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))
        path = key_text(".".join(str(p) for p in prefix + loc) or "(config)", 80)
        if err["type"] == "extra_forbidden":
            hint = closest(str(loc[-1])[:200], _fields_at(model_cls, loc[:-1])) if loc else ""
            lines.append(f"{path}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            msg = shorten(err["msg"].removeprefix("Value error, "), 160, text=True)
            value = err.get("input")
            shown = f" (got {shorten(value)})" if not isinstance(value, (dict, list)) and "input" in err else ""
            if tags and path in union:  # another member of the same union: "should be 'auto' or a valid boolean"
                i = union[path]
                head, _, got = lines[i].partition(" (got ")
                more = msg.removeprefix("Input should be ")
                lines[i] = f"{head} or {more}" + (f" (got {got}" if got else "")
                continue
            if tags:
                union[path] = len(lines)
            lines.append(f"{path}: {msg}{shown}")
    return lines


def _validate_open_section(raw: Any, section: str, key: str, default: str, registry) -> tuple[Any, list[str]]:
    """Validate `task` / `method` against the config class of the registered entry it names."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [f"{section}: must be a mapping with at least '{key}', got {type(raw).__name__}"]
    raw = {key: default, **raw}
    name = raw[key]
    if not isinstance(name, str) or name not in registry:
        shown = shorten(name, 40) if not isinstance(name, str) else f"'{key_text(name, 40)}'"
        hint = closest(name, registry.names()) if isinstance(name, str) and len(name) <= 100 else ""
        return None, [
            f"{section}.{key}: unknown {registry.kind} {shown}{hint}; available: {', '.join(registry.names())}"
        ]
    entry = registry.get(name, key=f"{section}.{key}")
    try:
        return entry.Config.model_validate(raw), []
    except ValidationError as exc:
        return None, _format_errors(exc, entry.Config, (section,))


def _validate_data(raw: Any, task, registry) -> tuple[Any, list[str]]:
    """Validate `data` against the data config class of the task (`Task.DataConfig`): the keys every task
    reads plus the task's own. A key only another task reads is an error naming that task when it is set to
    anything but its default; at its default it is dropped (configs saved before the data keys were split by
    task spell out every key)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [f"data: must be a mapping of keys, got {type(raw).__name__}"]
    if task is None:  # the task is invalid (reported already): still report errors in the common keys
        try:
            DataSection.model_validate({k: v for k, v in raw.items() if k in DataSection.model_fields})
        except ValidationError as exc:
            return None, _format_errors(exc, DataSection, ("data",))
        return None, []
    own = registry.get(task.type).DataConfig
    kept, errors = {}, []
    for key, value in raw.items():
        if key in own.model_fields:
            kept[key] = value
            continue
        owners = [name for name in registry.names() if key in registry.get(name).DataConfig.model_fields]
        if not owners:
            kept[key] = value  # unknown to every task: pydantic reports it, with the closest key
            continue
        other = registry.get(owners[0]).DataConfig
        try:
            given = getattr(other.model_validate({key: value}), key)
            default = other.model_fields[key].get_default(call_default_factory=True)
            at_default = (
                (given.model_dump() == default.model_dump()) if hasattr(given, "model_dump") else given == default
            )
        except ValidationError:
            at_default = False
        if not at_default:
            which = owners[0] + " task" if len(owners) == 1 else ", ".join(owners[:-1]) + f" and {owners[-1]} tasks"
            errors.append(f"data.{key_text(key)}: only used by the {which}, not by task.type '{task.type}'; remove it")
    if errors:
        return None, errors
    try:
        return own.model_validate(kept), []
    except ValidationError as exc:
        return None, _format_errors(exc, own, ("data",))


def _training_checks(cfg: RunConfig) -> list[str]:
    """Combinations of train/eval keys that transformers' Trainer would refuse only once training starts."""
    t, errors = cfg.train, []
    evaluates = t.eval_strategy != "no"
    if t.early_stopping.patience and not evaluates:
        errors.append(
            "train.early_stopping.patience: early stopping needs evaluations; set train.eval_strategy "
            "to epoch or steps, or patience to null"
        )
    if cfg.eval.load_best_model and evaluates and t.save_steps:
        if t.eval_strategy != "steps":
            errors.append(
                "train.save_steps: with eval.load_best_model, checkpoints must coincide with evaluations: "
                "set train.eval_strategy=steps with train.eval_steps, drop save_steps, or set "
                "eval.load_best_model=false"
            )
        elif t.eval_steps and t.save_steps % t.eval_steps:
            errors.append(
                f"train.save_steps: {t.save_steps} is not a multiple of train.eval_steps ({t.eval_steps}); "
                f"with eval.load_best_model every checkpoint must be an evaluation step "
                f"(or set eval.load_best_model=false)"
            )
    d = t.distributed
    if d.strategy == "fsdp" and d.fsdp.activation_checkpointing and t.gradient_checkpointing:
        errors.append(
            "train.distributed.fsdp.activation_checkpointing: choose it or train.gradient_checkpointing, "
            "not both (they recompute the same activations twice)"
        )
    return errors


def validate_config(raw: dict, environment: bool = False) -> RunConfig:
    """Validate a raw mapping into a RunConfig; raise ConfigError listing every problem with its key path.

    `environment`: also check that the config can run on this machine (CUDA for mixed precision, installed
    trackers and kernels); `load_config` does, for `tuneforge validate` and `tuneforge train`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config: the top level must be a mapping of sections, got {type(raw).__name__}")
    cfg, errors = config_problems(raw, environment)
    if errors:
        raise ConfigError(join_errors(errors))
    return cfg


def config_problems(raw: dict, environment: bool = False) -> tuple[RunConfig | None, list[str]]:
    """(the validated config or None, every problem as `key.path: what is wrong`): what `validate_config`
    raises, as a list (the web UI shows each problem next to the field it names)."""
    from tuneforge.registry import METHODS, TASKS

    if not isinstance(raw, dict):
        return None, [f"(config): the top level must be a mapping of sections, got {type(raw).__name__}"]
    errors = []
    for key in raw:
        if key not in RunConfig.model_fields:
            hint = closest(str(key)[:100], RunConfig.model_fields)
            errors.append(f"{key_text(key)}: unknown section{hint}")
    task, task_errors = _validate_open_section(raw.get("task"), "task", "type", DEFAULT_TASK, TASKS)
    method, method_errors = _validate_open_section(raw.get("method"), "method", "name", DEFAULT_METHOD, METHODS)
    errors += task_errors + method_errors
    data, data_errors = _validate_data(raw.get("data"), task, TASKS)
    errors += data_errors
    rest = {k: v for k, v in raw.items() if k in RunConfig.model_fields and k not in ("task", "method", "data")}
    for key, value in rest.items():
        if value is not None and not isinstance(value, dict):
            errors.append(f"{key}: must be a mapping of keys, got {type(value).__name__}")
    rest = {k: (v or {}) for k, v in rest.items() if isinstance(v, dict) or v is None}
    cfg = None
    if task is not None and method is not None and data is not None:
        try:
            cfg = RunConfig.model_validate({**rest, "data": data, "task": task, "method": method})
        except ValidationError as exc:
            errors += _format_errors(exc, RunConfig)
    else:
        try:  # still report errors in the other sections
            RunConfig.model_validate({**rest, "task": {"type": "x"}, "method": {"name": "x"}})
        except ValidationError as exc:
            errors += _format_errors(exc, RunConfig)
    if not errors and cfg is not None:
        TASKS.get(cfg.task.type).fill_defaults(cfg)
        METHODS.get(cfg.method.name).fill_defaults(cfg)
        # cross-field checks owned by the task and the method, which know what they support
        for check in (TASKS.get(cfg.task.type).check_config, METHODS.get(cfg.method.name).check_config):
            try:
                check(cfg)
            except ConfigError as exc:
                errors.append(str(exc))
            except ValidationError as exc:  # a check that assigns a field
                errors += _format_errors(exc, RunConfig)
        errors += _training_checks(cfg)
        if cfg.model.random_init and not METHODS.get(cfg.method.name).saves_whole_model:
            errors.append(
                f"model.random_init: method '{cfg.method.name}' saves only its own weights on top of the "
                f"pretrained base, so a randomly initialised base could not be loaded back; use a method "
                f"that trains and saves every weight (method.name=full)"
            )
        if cfg.model.extends_vocabulary and not METHODS.get(cfg.method.name).trains_new_tokens:
            able = ", ".join(n for n in METHODS.names() if METHODS.get(n).trains_new_tokens)
            errors.append(
                f"model.extend_vocabulary / add_tokens: method '{cfg.method.name}' cannot train the embedding rows "
                f"of new tokens; use one of: {able}"
            )
        strategy = cfg.train.distributed.strategy
        for owner in (TASKS.get(cfg.task.type), METHODS.get(cfg.method.name)):
            why = owner.supports_strategy(cfg, strategy)
            if why:
                errors.append(f"train.distributed.strategy: '{strategy}' cannot train this run: {why}")
        if environment and not errors:
            from tuneforge.config.environment import environment_errors

            errors += environment_errors(cfg)
    return (None if errors else cfg), errors
