"""Dotted `key=value` overrides (command line, search trials, the web UI) merged into a raw config mapping, with
YAML semantics for the values."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import yaml

from tuneforge.config.messages import key_text, shorten
from tuneforge.config.yaml_reader import MAX_NUMBER_CHARS, TooBig, yaml_load
from tuneforge.errors import ConfigError


def parse_value(text: str) -> Any:
    """YAML semantics for override values, plus floats like 3e-5 that YAML 1.1 reads as strings.

    Raises ConfigError for a value nested too deeply or a number too long to be one."""
    if text.strip().lower() in ("yes", "no", "on", "off", "y", "n"):
        return text.strip()  # YAML 1.1 would read these as booleans: `eval_strategy=no` means the word
    try:
        value = yaml_load(text)
    except TooBig as exc:
        raise ConfigError(exc.problem) from None
    except (RecursionError, MemoryError):
        raise ConfigError("nested too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):
        return text
    if isinstance(value, str):
        if len(value) <= MAX_NUMBER_CHARS and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value.strip()):
            return float(value)
        return value
    return value


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """A copy of `raw` with each `dotted.key=value` of `overrides` set (missing sections created). Raises
    ConfigError for an item that is not `key=value` or whose path runs through a value."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {shorten(item, 60)} is not of the form key=value (for example train.learning_rate=3e-5)"
            )
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {shorten(item, 60)} has an empty key")
        try:
            value = parse_value(text)
        except ConfigError as exc:
            raise ConfigError(f"{key_text('.'.join(parts))}: {exc}") from None
        set_path(raw, parts, value, f"override {shorten(item, 60)}")
    return raw


def set_path(raw: dict, parts: list[str], value: Any, what: str) -> None:
    """raw[parts[0]][parts[1]]... = value, creating missing sections (in place).

    Raises ConfigError, naming `what`, when a prefix of the path is a value rather than a section."""
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: '{key_text('.'.join(parts[: i + 1]))}' is a value, not a section")
        node = child
    node[parts[-1]] = value
