"""The Train page's form, without gradio: fields generated from the run-config schema, and conversions between a
raw YAML mapping and widget values.

One `FieldSpec` per leaf key of the schema (nested sections are walked into, named-section mappings such as
multitask's `task.tasks` are one YAML field), so a new config key gets a form field without UI code. Converting a
raw config to widget values and back reproduces it exactly (`form_to_raw(*form_values(raw), base=raw) == raw`):
a key the user wrote stays as written unless its widget was changed, and keys the form does not show are kept.
Only the config layer, the registries, pydantic and yaml are imported here (no gradio, no torch of its own).
"""

from __future__ import annotations

import copy
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from tuneforge.config.loader import DEFAULT_METHOD, DEFAULT_TASK, parse_value
from tuneforge.config.schema import DataSection, RunConfig
from tuneforge.errors import ConfigError, first_line
from tuneforge.registry import METHODS, TASKS

#: the sections every config has, in the order the form shows them (task, method and data:<type> come after)
COMMON_GROUPS = ("model", "data", "train", "distill", "eval", "output")
#: top-level order of a written config
SECTION_ORDER = ("model", "data", "task", "method", "train", "distill", "eval", "output")
#: every widget kind
KINDS = ("bool", "choice", "int", "float", "text", "yaml")

_NONE = type(None)
_UNIONS = (Union, types.UnionType)
#: YAML 1.1 reads these words as booleans: a choice field that has them as strings shows them for the boolean
_YAML11_WORDS = {True: ("yes", "on", "y", "true"), False: ("no", "off", "n", "false")}


@dataclass(frozen=True)
class FieldSpec:
    """One form field: a leaf key of the schema, the widget kind that edits it and its help text."""

    key: str
    group: str
    kind: str
    choices: tuple
    default: Any
    optional: bool
    required: bool
    description: str
    #: the python value of each entry of `choices` (parallel tuple; a Literal's own values, True/False for a
    #: union with bool); empty: "true"/"false" read as booleans, any other choice as the string
    _values: tuple = field(default=(), repr=False, compare=False)


# --- walking the schema ------------------------------------------------------------------------------------------


def _members(ann: Any) -> tuple[list, bool]:
    """The members of a Union annotation other than None, and whether None is one (Optional)."""
    if typing.get_origin(ann) in _UNIONS:
        args = typing.get_args(ann)
        return [a for a in args if a is not _NONE], _NONE in args
    return [ann], False


def _choice_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _kind(ann: Any) -> tuple[str, tuple, tuple, bool]:
    """(kind, choices, choice values, optional) of a field annotation, following the kind rules of FieldSpec."""
    members, optional = _members(ann)
    literals = [a for a in members if typing.get_origin(a) is Literal]
    if members == [bool] and not optional:
        return "bool", (), (), False
    if members and all(a is bool or typing.get_origin(a) is Literal for a in members):
        # a Literal (maybe with bool or None), or Optional[bool], which a checkbox cannot show as null
        values = [v for lit in literals for v in typing.get_args(lit) if v is not None]
        if bool in members:
            values += [True, False]
        shown: dict[str, Any] = {}
        for v in values:
            shown.setdefault(_choice_text(v), v)
        return "choice", tuple(shown), tuple(shown.values()), optional
    if members == [int]:
        return "int", (), (), optional
    if members == [float]:
        return "float", (), (), optional
    if members == [str]:
        return "text", (), (), optional
    return "yaml", (), (), optional


def _is_section(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _plain(value: Any) -> Any:
    """A default as plain python/JSON data (sections dumped with model_dump(mode='json'))."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return to_jsonable_python(value)


def _walk(
    model: type[BaseModel], prefix: str, group: str, defaults: BaseModel | None = None, skip: typing.Iterable[str] = ()
) -> list[FieldSpec]:
    """The fields of `model` under `prefix`, recursing into sub-sections. `defaults`: the instance the parent's
    default makes, whose values are the leaves' defaults (a parent's factory may differ from the leaves' own)."""
    specs: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        ann, key = info.annotation, prefix + name
        has_default = info.default is not PydanticUndefined or info.default_factory is not None
        if defaults is not None:
            default = getattr(defaults, name)
        else:
            default = info.get_default(call_default_factory=True) if has_default else None
        if _is_section(ann):
            specs += _walk(ann, key + ".", group, default if isinstance(default, BaseModel) else None)
            continue
        kind, choices, values, optional = _kind(ann)
        specs.append(
            FieldSpec(
                key=key,
                group=group,
                kind=kind,
                choices=choices,
                default=None if default is None else _plain(default),
                optional=optional,
                required=not has_default,
                description=info.description or "",
                _values=values,
            )
        )
    return specs


def _common() -> list[FieldSpec]:
    specs: list[FieldSpec] = []
    for section in COMMON_GROUPS:
        info = RunConfig.model_fields[section]
        cls = DataSection if section == "data" else info.annotation
        default = info.get_default(call_default_factory=True)
        specs += _walk(cls, section + ".", section, default if isinstance(default, cls) else None)
    return specs


def _task(task_type: str):
    try:
        return TASKS.get(task_type, key="task.type")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _method(method_name: str):
    try:
        return METHODS.get(method_name, key="method.name")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _task_fields(task_type: str) -> list[FieldSpec]:
    """task:<type> (the task's keys but `type`), then data:<type> (the data keys only that task adds)."""
    task = _task(task_type)
    return _walk(task.Config, "task.", f"task:{task_type}", skip=("type",)) + _walk(
        task.DataConfig, "data.", f"data:{task_type}", skip=tuple(DataSection.model_fields)
    )


def _method_fields(method_name: str) -> list[FieldSpec]:
    return _walk(_method(method_name).Config, "method.", f"method:{method_name}", skip=("name",))


def task_types() -> list[str]:
    """The registered tasks (choices of task.type)."""
    return TASKS.names()


def method_names() -> list[str]:
    """The registered methods (choices of method.name)."""
    return METHODS.names()


def all_fields() -> list[FieldSpec]:
    """Every field of every group: the common sections, then each task's and each method's own keys."""
    specs = _common()
    for name in task_types():
        specs += _task_fields(name)
    for name in method_names():
        specs += _method_fields(name)
    return specs


def fields_for(task_type: str, method_name: str) -> list[FieldSpec]:
    """The fields of a config of this task and method: model, data, train, distill, eval, output, then
    task:<type>, data:<type> and method:<name>. Raises ValueError for an unknown task or method."""
    return _common() + _task_fields(task_type) + _method_fields(method_name)


# --- widget values -----------------------------------------------------------------------------------------------


def _flow(value: Any) -> str:
    """`value` as one line of flow YAML (`[0, 2, 4]`, `{negative: 2.0}`, `all-linear`)."""

    def dump(**style) -> str:
        text = yaml.safe_dump(
            value, default_flow_style=True, allow_unicode=True, width=math.inf, sort_keys=False, **style
        ).rstrip()
        return text.removesuffix("\n...").rstrip()  # the end-of-document marker after a plain scalar

    text = dump()
    return dump(default_style='"') if "\n" in text else text  # multi-line strings: double-quoted, escaped


def _parse_yaml(spec: FieldSpec, text: str) -> Any:
    """One line of YAML as a value, with the CLI overrides' rules (`3e-5` is a number, `no` a word)."""
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise ValueError(f"{spec.key}: malformed YAML ({problem})") from None
    except (RecursionError, MemoryError, ValueError, TypeError, OverflowError):
        raise ValueError(f"{spec.key}: malformed YAML") from None
    try:
        return parse_value(text)
    except ConfigError as exc:
        raise ValueError(f"{spec.key}: {exc}") from None


def _number(spec: FieldSpec, value: Any) -> int | float:
    """A widget's number (or its text) as the field's type; ValueError naming the key when it is none."""
    if isinstance(value, bool):
        raise ValueError(f"{spec.key}: must be a number, not a boolean")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{spec.key}: {value[:40]!r} is not a number") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"{spec.key}: must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{spec.key}: must be a finite number")
    if spec.kind == "int" and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{spec.key}: must be a whole number, got {value:g}")
        value = int(value)
    return value


def to_widget(spec: FieldSpec, value: Any) -> Any:
    """A value read from YAML as its widget shows it: bool -> bool, choice -> str, int/float -> number or None,
    text -> str ("" for null), yaml -> one line of flow YAML ("" for null). Never raises: a value the widget
    cannot show (an invalid config) shows as empty or as text, and validation reports it."""
    kind = spec.kind
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return bool(spec.default) if value is None else bool(value)
    if kind == "choice":
        if value is None:
            return "" if spec.optional or spec.default is None else to_widget(spec, spec.default)
        if isinstance(value, bool) and _choice_text(value) not in spec.choices:
            # `eval_strategy: no` is read as False by YAML 1.1: show the word it stands for
            return next((w for w in _YAML11_WORDS[value] if w in spec.choices), _choice_text(value))
        return _choice_text(value)
    if kind in ("int", "float"):
        if value is None or isinstance(value, bool):
            return None
        try:
            return _number(spec, value)
        except ValueError:
            return value if isinstance(value, (int, float)) else None
    if kind == "text":
        if value is None:
            return ""
        return _choice_text(value) if isinstance(value, bool) else str(value)
    return "" if value is None else _flow(value)


def from_widget(spec: FieldSpec, widget: Any) -> Any:
    """A widget value as the python value to write to YAML (the inverse of `to_widget`). An empty widget is null
    for optional fields. Raises ValueError('<key>: <why>') for a value that does not parse or is not allowed."""
    kind = spec.kind
    if kind == "bool":
        if isinstance(widget, bool):
            return widget
        if isinstance(widget, str) and widget.strip().lower() in ("true", "false"):
            return widget.strip().lower() == "true"
        raise ValueError(f"{spec.key}: must be true or false, got {str(widget)[:40]!r}")
    empty = widget is None or (isinstance(widget, str) and not widget.strip())
    if empty and (spec.optional or spec.required):
        return None  # null; a required field left empty is omitted by form_to_raw (validation names it)
    if kind == "text":
        return "" if widget is None else str(widget)
    if empty:
        raise ValueError(f"{spec.key}: needs a value (null is not allowed here)")
    if kind in ("int", "float"):
        return _number(spec, widget)
    if kind == "choice":
        text = _choice_text(widget) if isinstance(widget, bool) else str(widget).strip()
        if text not in spec.choices:
            raise ValueError(f"{spec.key}: must be one of {', '.join(spec.choices)}; got {text[:40]!r}")
        if spec._values:
            return spec._values[spec.choices.index(text)]
        return {"true": True, "false": False}.get(text, text)
    if not isinstance(widget, str):
        return copy.deepcopy(widget)  # already a value (a list or mapping from a JSON widget)
    return _parse_yaml(spec, widget)


# --- raw configs <-> form values -------------------------------------------------------------------------------


def _lookup(raw: Any, key: str) -> tuple[bool, Any]:
    """(present, value) of a dotted key in a raw mapping; absent when a section on the way is not a mapping."""
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(raw: dict, key: str, value: Any) -> None:
    """raw[a][b]... = value for key 'a.b...', creating sections (in place); a null section becomes a mapping."""
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            where = ".".join(parts[: i + 1])
            raise ValueError(f"{key}: '{where}' is a value in the config, not a section")
        node = node[part]
    node[parts[-1]] = value


def _delete(raw: dict, key: str) -> None:
    parent, _, last = key.rpartition(".")
    present, node = _lookup(raw, parent) if parent else (True, raw)
    if present and isinstance(node, dict):
        node.pop(last, None)


def _same(a: Any, b: Any) -> bool:
    """Equal values, where a boolean never equals a number (True == 1 in python, not in a config)."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _unchanged(spec: FieldSpec, widget: Any, written: Any) -> bool:
    """Whether `widget` shows what `written` (the value in the base config) shows, so the user's own spelling
    (1 rather than 1.0, `no` read as false, flow or block YAML) is kept."""
    shown = to_widget(spec, written)
    if _same(widget, shown):
        return True
    try:
        return _same(to_widget(spec, from_widget(spec, widget)), shown)
    except ValueError:
        return False


def _names(raw: dict) -> tuple[str, str]:
    """task.type and method.name of a raw config (the loader's defaults when not given)."""
    task = raw.get("task") if isinstance(raw.get("task"), dict) else {}
    method = raw.get("method") if isinstance(raw.get("method"), dict) else {}
    task_type = task.get("type") if task.get("type") is not None else DEFAULT_TASK
    method_name = method.get("name") if method.get("name") is not None else DEFAULT_METHOD
    return str(task_type), str(method_name)


def form_values(raw: dict) -> tuple[str, str, dict[str, Any]]:
    """(task type, method name, {key: widget value}) for the form of a raw config: every field of
    fields_for(task, method), with the config's value where it has one, else the default. Raises ValueError when
    the config names an unknown task or method."""
    raw = raw if isinstance(raw, dict) else {}
    task_type, method_name = _names(raw)
    values = {}
    for spec in fields_for(task_type, method_name):
        present, value = _lookup(raw, spec.key)
        values[spec.key] = to_widget(spec, value if present else copy.deepcopy(spec.default))
    return task_type, method_name, values


def _ordered(node: dict, base: Any, prefix: str, order: list[str]) -> dict:
    """`node` with its keys in base's order first, then the schema's, then the rest; sections recursively."""
    base = base if isinstance(base, dict) else {}
    schema = list(dict.fromkeys(k[len(prefix) :].split(".")[0] for k in order if k.startswith(prefix)))
    names = [k for k in base if k in node]
    names += [k for k in schema if k in node and k not in names]
    names += [k for k in node if k not in names]
    out = {}
    for name in names:
        value, sub = node[name], f"{prefix}{name}."
        is_section = isinstance(value, dict) and any(k.startswith(sub) for k in order)
        out[name] = _ordered(value, base.get(name), sub, order) if is_section else value
    return out


def form_to_raw(task_type: str, method_name: str, values: dict[str, Any], base: dict | None = None) -> dict:
    """The raw config (what is written as YAML) of a filled-in form.

    task.type and method.name are always written. A field is written when `base` has its key or its value
    differs from the default; a field whose widget still shows base's value keeps base's value as written. Keys
    of `base` the form does not show (unknown keys, another task's or method's keys) are kept, so nothing the
    user wrote is lost; fields missing from `values` are left as base has them. Sections come in the order
    model, data, task, method, train, distill, eval, output (then base's others); keys in base's order first, then
    the schema's. Raises ValueError('<key>: <why>') for a widget value that does not parse."""
    base = base if isinstance(base, dict) else {}
    specs = fields_for(task_type, method_name)
    raw = copy.deepcopy(base)
    for spec in specs:
        if spec.key not in values:
            continue
        widget = values[spec.key]
        present, written = _lookup(base, spec.key)
        if present and _unchanged(spec, widget, written):
            continue  # raw holds base's value already
        value = from_widget(spec, widget)
        if value is None and spec.required:
            _delete(raw, spec.key)  # validation reports the missing key
        elif present or not _same(value, spec.default):
            _set(raw, spec.key, value)
    for section, key, name in (("task", "type", task_type), ("method", "name", method_name)):
        if not isinstance(raw.get(section), dict):
            raw[section] = {}
        raw[section][key] = name
    order = ["task.type", "method.name"] + [s.key for s in specs]
    top = [s for s in SECTION_ORDER if s in raw] + [s for s in raw if s not in SECTION_ORDER]
    return {s: _ordered(raw[s], base.get(s), s + ".", order) if isinstance(raw[s], dict) else raw[s] for s in top}


def to_yaml(raw: dict) -> str:
    """A raw config as YAML text, keys in the order given."""
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
