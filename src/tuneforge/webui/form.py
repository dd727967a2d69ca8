"""The Train form's values, without gradio: conversions between a raw YAML mapping and the widget values of the
fields webui/fields.py makes of the schema.

Converting a raw config to widget values and back reproduces it exactly
(`form_to_raw(*form_values(raw), base=raw) == raw`): a key the user wrote stays as written unless its widget was
changed, and keys the form does not show are kept. Only the config layer, the form's fields and yaml are imported
here (no gradio, no torch of its own).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import yaml

from tuneforge.config.overrides import parse_value
from tuneforge.config.validation import DEFAULT_METHOD, DEFAULT_TASK
from tuneforge.errors import ConfigError, first_line
from tuneforge.webui.fields import FieldSpec, choice_text, fields_for

#: top-level order of a written config
SECTION_ORDER = ("model", "data", "task", "method", "train", "distill", "eval", "output")
#: YAML 1.1 reads these words as booleans: a choice field that has them as strings shows them for the boolean
_YAML11_WORDS = {True: ("yes", "on", "y", "true"), False: ("no", "off", "n", "false")}


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
        if isinstance(value, bool) and choice_text(value) not in spec.choices:
            # `eval_strategy: no` is read as False by YAML 1.1: show the word it stands for
            return next((w for w in _YAML11_WORDS[value] if w in spec.choices), choice_text(value))
        return choice_text(value)
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
        return choice_text(value) if isinstance(value, bool) else str(value)
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
        text = choice_text(widget) if isinstance(widget, bool) else str(widget).strip()
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
