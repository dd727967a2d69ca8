"""Small checks shared by the methods' `check_config` (kept here so every message has the same form)."""

from __future__ import annotations

import re

from tuneforge.errors import ConfigError


def check_module_pattern(key: str, value, keywords: tuple[str, ...] = ("all-linear",)) -> None:
    """`value` of `key` (e.g. method.target_modules) is a list of module-name suffixes or one regular expression
    (PEFT's convention); a string must compile. Raises ConfigError naming the key."""
    if not isinstance(value, str) or value in keywords:
        return
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        shown = value if len(value) <= 60 else value[:59] + "…"
        why = getattr(exc, "msg", None) or type(exc).__name__
        raise ConfigError(
            f"{key}: {shown!r} is an invalid regular expression ({why}); give a valid regex, "
            f"or a list of module names such as [query, value]"
        ) from None
