"""The Train form's fields, without gradio: one `FieldSpec` per leaf key of the run-config schema.

Nested sections are walked into, named-section mappings such as multitask's `task.tasks` are one YAML field, so a
new config key gets a form field without UI code. A field is found by its group (`train`, `task:<type>`,
`data:<type>`, `method:<name>`) and key, or by its path (`FieldSpec.path`). Only the config layer, the registries
and pydantic are imported here (no gradio, no torch of its own).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from tuneforge.config.schema import DataSection, RunConfig
from tuneforge.errors import ConfigError
from tuneforge.registry import METHODS, TASKS

#: the sections every config has, in the order the form shows them (task, method and data:<type> come after)
COMMON_GROUPS = ("model", "data", "train", "distill", "eval", "output")
#: every widget kind
KINDS = ("bool", "choice", "int", "float", "text", "yaml")

_NONE = type(None)
_UNIONS = (Union, types.UnionType)


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

    @property
    def path(self) -> str:
        """The field's name across tasks and methods: the key for the sections every config has
        (`train.batch_size`), else the key with its task or method in brackets after the section
        (`method[lora].r`, `task[causal_lm].generation.temperature`, `data[image_classification].cutmix`), as
        the same key of two methods is two fields."""
        if ":" not in self.group:
            return self.key
        section, name = self.group.split(":", 1)
        return f"{section}[{name}]{self.key[len(section) :]}"


def _members(ann: Any) -> tuple[list, bool]:
    """The members of a Union annotation other than None, and whether None is one (Optional)."""
    if typing.get_origin(ann) in _UNIONS:
        args = typing.get_args(ann)
        return [a for a in args if a is not _NONE], _NONE in args
    return [ann], False


def choice_text(value: Any) -> str:
    """How a choice widget shows a value: booleans as `true`/`false`, anything else as its text."""
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
            shown.setdefault(choice_text(v), v)
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
