"""Config reference generated from the pydantic field descriptions (one source for --help, docs and UI)."""

from __future__ import annotations

import json
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tuneforge.config.schema import DataSection, MethodConfig, RunConfig, TaskConfig


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(ann))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        # sorted: typing caches equal unions, so the order of the arguments depends on which module made one first
        return " or ".join(sorted(_type_name(a) for a in args))
    if origin in (list, list):
        return f"list of {_type_name(typing.get_args(ann)[0])}"
    return getattr(ann, "__name__", str(ann))


def _default(field) -> str:
    if field.default is PydanticUndefined:
        return "(factory)" if field.default_factory else "required"
    return f"`{json.dumps(field.default)}`".replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str, skip=()) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is not None and not issubclass(sub, (TaskConfig, MethodConfig)):
            rows += _rows(sub, f"{prefix}{name}.")
            continue
        if typing.get_origin(ann) is dict:  # named sections (multi-task sub-tasks): their keys under <name>
            value = typing.get_args(ann)[1]
            if isinstance(value, type) and issubclass(value, BaseModel):
                desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
                rows.append(f"| `{prefix}{name}` | mapping name -> section | {_default(field)} | {desc} |")
                rows += _rows(value, f"{prefix}{name}.<name>.")
                continue
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{prefix}{name}` | {_type_name(ann)} | {_default(field)} | {desc} |")
        optional = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if optional and type(None) in typing.get_args(ann):  # an optional section (null: off): its keys too
            rows += _rows(optional[0], f"{prefix}{name}.")
    return rows


def reference_markdown() -> str:
    from tuneforge.registry import METHODS, TASKS

    header = ["| key | type | default | description |", "|---|---|---|---|"]
    out = ["### Sections model, data, train, distill, eval, output", ""] + header
    for section in ("model", "data", "train", "distill", "eval", "output"):
        cls = DataSection if section == "data" else RunConfig.model_fields[section].annotation
        out += _rows(cls, f"{section}.")
    out += ["", "### task (by `task.type`), with the `data` keys only that task reads", ""]
    for name in TASKS.names():
        task = TASKS.get(name)
        out += (
            [f"`task.type: {name}`", ""]
            + header
            + _rows(task.Config, "task.")
            + _rows(task.DataConfig, "data.", skip=DataSection.model_fields)
            + [""]
        )
    out += ["### method (by `method.name`)", ""]
    for name in METHODS.names():
        m = METHODS.get(name)
        out += (
            [f"`method.name: {name}` — {m.summary} Default learning rate {m.Config.default_learning_rate:g}.", ""]
            + header
            + _rows(m.Config, "method.")
            + [""]
        )
    return "\n".join(out).rstrip() + "\n"


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def update_reference(path: str = "docs/config-reference.md") -> bool:
    """Rewrite the generated block between the markers of `path`; returns True when it changed."""
    from pathlib import Path

    p = Path(path)
    text = p.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{reference_markdown()}{END}{tail}"
    p.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys

    print("config reference", "updated" if update_reference(*sys.argv[1:]) else "unchanged")
