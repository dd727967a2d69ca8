"""Checking a search space against the run config before any trial: every key must exist for the task and method
of its conditional path, and every choice and both ends of every range must give a valid config."""

from __future__ import annotations

import copy
from typing import Any

from tuneforge.config.messages import shorten
from tuneforge.config.validation import validate_config
from tuneforge.errors import ConfigError
from tuneforge.registry import closest
from tuneforge.search.space import Param, set_key


def _leaf_paths(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, dict) and data:
        out = []
        for k, v in data.items():
            out += _leaf_paths(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [prefix] if prefix else []


def _valid_paths(raw: dict) -> set[str]:
    """Every dotted key (sections too) of the validated config `raw`."""
    dumped = validate_config(copy.deepcopy(raw)).model_dump(mode="json")
    leaves = _leaf_paths(dumped)
    out = set(leaves)
    for leaf in leaves:
        parts = leaf.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def _methods_with(key: str) -> list[str]:
    from tuneforge.registry import METHODS

    return [m for m in METHODS.names() if key in METHODS.get(m).Config.model_fields]


def _values_to_check(p: Param) -> list:
    if p.kind == "choice":
        return list(p.choices)
    values = [p.low, p.high]
    if p.kind == "int" and p.step and (p.high - p.low) % p.step:
        values[1] = p.low + (p.high - p.low) // p.step * p.step
    return values


def validate_space(params: list[Param], base: dict, where: str = "space: ") -> int:
    """Check every key and every range of the space against the base run config (raw, overrides applied), on
    each conditional path: a key must be a config key for the task and method of that path, and every choice and
    both ends of every range must give a valid config. Returns how many configs were checked.

    Raises ConfigError (one line) naming the first bad key: a misspelt key with the closest valid one, a value
    the config refuses with the config's own message."""
    validate_config(copy.deepcopy(base))  # the base itself: its own errors, reported as they are
    checked = 0

    def check(items: list[Param], context: dict, label: str) -> None:
        nonlocal checked
        try:
            paths = _valid_paths(context)
        except ConfigError as exc:
            raise ConfigError(f"{where}{label}: {str(exc).removeprefix('invalid config: ')}") from None
        for p in items:
            at = f"{where}{p.key}" + (f" (with {label})" if label else "")
            if p.key not in paths:
                parts = p.key.split(".")
                name = (context.get("method") or {}).get("name")
                owners = _methods_with(parts[1]) if parts[0] == "method" and len(parts) == 2 else []
                if owners and name not in owners:  # a key of another method: sample it only with that method
                    raise ConfigError(
                        f"{at}: method '{name}' has no key '{parts[1]}' (only {', '.join(owners)}); "
                        f"sample it only with its method: method.name: {{choice: {{{owners[0]}: "
                        f"{{{p.key}: ...}}, {name}: null}}}}"
                    )
                leaves = sorted(x for x in paths if not any(y.startswith(x + ".") for y in paths))
                raise ConfigError(f"{at}: not a config key{closest(p.key[:200], leaves)}")
            for value in _values_to_check(p):
                try:
                    validate_config(set_key(context, p.key, value))
                except ConfigError as exc:
                    raise ConfigError(
                        f"{at}: {shorten(value, 40)} gives an invalid config: "
                        f"{str(exc).removeprefix('invalid config: ')}"
                    ) from None
                checked += 1
        # each conditional value: its sub-space, and the other keys of this level, in that value's context (a plain
        # choice of method.name too: a method key beside it must exist for every method it can pick)
        for p in items:
            branches = (
                p.branches
                if p.branches is not None
                else ({v: [] for v in p.choices} if p.key == "method.name" and p.kind == "choice" else {})
            )
            for value, sub in branches.items():
                ctx = set_key(context, p.key, value)
                branch = f"{p.key}={value}"
                rest = [q for q in items if q is not p and q.branches is None and q.key != "method.name"]
                check(sub + rest, ctx, f"{label}, {branch}" if label else branch)

    check(params, base, "")
    return checked
