"""YAML loading, dotted `key=value` overrides and strict validation with errors that name the key."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.registry import closest

DEFAULT_TASK = "classification"
DEFAULT_METHOD = "lora"


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, task, ...)")
    return data


def parse_value(text: str) -> Any:
    """YAML semantics for override values, plus floats like 3e-5 that YAML 1.1 reads as strings."""
    if text.strip().lower() in ("yes", "no", "on", "off", "y", "n"):
        return text.strip()  # YAML 1.1 would read these as booleans: `eval_strategy=no` means the word
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (for example train.learning_rate=3e-5)")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override '{item}' has an empty key")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{'.'.join(parts[:i + 1])}' is a value, not a section")
            node = child
        node[parts[-1]] = parse_value(text)
    return raw


def _fields_at(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)model reached by following `loc` from `model_cls`."""
    cls = model_cls
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        ann = field.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                cls = candidate
                break
        else:
            return []
    return list(cls.model_fields)


def _format_errors(exc: ValidationError, model_cls: type[BaseModel], prefix: tuple = ()) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in prefix + loc) or "(config)"
        if err["type"] == "extra_forbidden":
            hint = closest(loc[-1], _fields_at(model_cls, loc[:-1]))
            lines.append(f"{path}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            shown = f" (got {value!r})" if not isinstance(value, (dict, list)) and "input" in err else ""
            lines.append(f"{path}: {msg}{shown}")
    return lines


def _validate_open_section(raw: Any, section: str, key: str, default: str, registry) -> tuple[Any, list[str]]:
    """Validate `task` / `method` against the config class of the registered entry it names."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [f"{section}: must be a mapping with at least '{key}'"]
    raw = {key: default, **raw}
    try:
        entry = registry.get(str(raw[key]), key=f"{section}.{key}")
    except ConfigError as exc:
        return None, [str(exc)]
    try:
        return entry.Config.model_validate(raw), []
    except ValidationError as exc:
        return None, _format_errors(exc, entry.Config, (section,))


def validate_config(raw: dict) -> RunConfig:
    """Validate a raw mapping into a RunConfig; raise ConfigError listing every problem with its key path."""
    from tuneforge.methods import METHODS
    from tuneforge.tasks import TASKS

    errors = []
    for key in raw:
        if key not in RunConfig.model_fields:
            errors.append(f"{key}: unknown section{closest(key, RunConfig.model_fields)}")
    task, task_errors = _validate_open_section(raw.get("task"), "task", "type", DEFAULT_TASK, TASKS)
    method, method_errors = _validate_open_section(raw.get("method"), "method", "name", DEFAULT_METHOD, METHODS)
    errors += task_errors + method_errors
    rest = {k: v for k, v in raw.items() if k in RunConfig.model_fields and k not in ("task", "method")}
    for key, value in rest.items():
        if value is not None and not isinstance(value, dict):
            errors.append(f"{key}: must be a mapping of keys, got {type(value).__name__}")
    rest = {k: (v or {}) for k, v in rest.items() if isinstance(v, dict) or v is None}
    cfg = None
    if task is not None and method is not None:
        try:
            cfg = RunConfig.model_validate({**rest, "task": task, "method": method})
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
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))
    return cfg


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), raw: dict | None = None) -> RunConfig:
    """Load a YAML file (or a mapping), apply `key=value` overrides and validate."""
    data = read_yaml(path) if path is not None else copy.deepcopy(raw or {})
    data = apply_overrides(data, overrides)
    cfg = validate_config(data)
    if cfg.output.name is None and path is not None:
        cfg.output.name = Path(path).stem
    return cfg


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def resolved_config(raw: dict) -> dict:
    """`raw` validated, with every default filled in, as plain data: two configs that train the same run compare
    equal, even if one was saved before a defaulted key existed. Raises ConfigError like `validate_config`."""
    return validate_config(copy.deepcopy(raw)).model_dump(mode="json")
