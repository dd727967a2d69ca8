"""The base of every config section: unknown keys are errors, and scalars are checked strictly (a boolean is
never a number, numbers are finite and fit 64 bits) where pydantic's lax mode would coerce them."""

from __future__ import annotations

import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: seeds go to random.seed, numpy (0 .. 2**32-1) and torch.manual_seed: the range all three accept
MAX_SEED = 2**32 - 1
#: no count in a config is meaningfully larger; bigger values overflow torch / numpy integers
MAX_INT = 2**63 - 1


def _accepts(ann: Any, kind: type) -> bool:
    """Whether the annotation `ann` (possibly Optional/Union/Literal/list/dict) accepts a `kind` value."""
    if ann is kind:
        return True
    origin = typing.get_origin(ann)
    if origin is Literal:
        return any(type(a) is kind for a in typing.get_args(ann))
    if origin is None:
        return ann is Any
    return any(_accepts(a, kind) for a in typing.get_args(ann) if a is not Ellipsis)


def _scalar_problem(value: Any, ann: Any) -> str | None:
    """Why a YAML scalar cannot be a value of `ann` although pydantic's lax mode would coerce it."""
    if isinstance(value, bool):
        # pydantic's lax mode reads true as 1 / 1.0: only where a number is expected does a boolean slip through
        if not _accepts(ann, bool) and (_accepts(ann, int) or _accepts(ann, float)):
            return "must be a number, not a boolean (true/false)"
        return None
    if isinstance(value, int) and abs(value) > MAX_INT:
        return "number is too large"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, float) and abs(value) > MAX_INT and _accepts(ann, int) and not _accepts(ann, float):
        return "number is too large"
    return None


def _holds_scalars(ann: Any) -> bool:
    """Whether `ann` is (or unions with) a list or dict of scalars, rather than a config section."""
    origin = typing.get_origin(ann)
    if origin in (list, dict, tuple, set):
        return True
    return origin is not None and origin is not Literal and any(_holds_scalars(a) for a in typing.get_args(ann))


def _container_problem(value: Any, ann: Any) -> str | None:
    if isinstance(value, (dict, list, tuple)) and not _holds_scalars(ann):
        return None  # a section (validated by its own fields) or a type error pydantic reports
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return _scalar_problem(value, ann)
    for item in items:
        if isinstance(item, (bool, int, float)):
            problem = _scalar_problem(item, ann)
            if problem:
                return problem.replace("must be", "every entry must be", 1)
    return None


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated. Booleans never pass as
    numbers (pydantic would read `true` as 1), and numbers must be finite and fit a 64-bit integer."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            problem = _container_problem(value, field.annotation)
            if problem:
                raise ValueError(problem)
        return value


def seed_field(default: int | None, description: str) -> Any:
    """A seed field: `description` plus the range every seeded library accepts (0 .. MAX_SEED)."""
    return Field(default, ge=0, le=MAX_SEED, description=description + " An integer from 0 to 4294967295.")
