"""One-line config messages: user values and keys echoed cut to a length, and a list of problems joined into
one line under 300 characters (cut after the first few)."""

from __future__ import annotations

import math
from typing import Any

#: ConfigError messages stay under this, so `error: <message>` is under 300 characters
MAX_MESSAGE = 290


def shorten(value: Any, limit: int = 80, text: bool = False) -> str:
    """`repr` of a user value (`str` with `text`) for a message, on one line and at most `limit` characters (an
    ellipsis marks a cut)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        shown = str(value) if text else repr(value)
    except Exception:
        shown = f"<{type(value).__name__}>"
    shown = " ".join(shown.split()) if any(c in shown for c in "\n\r\t\x0b\x0c") else shown
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def key_text(text: Any, limit: int = 60) -> str:
    """A key (path) as written by the user, cut to `limit` characters."""
    text = " ".join(str(text).split()) or "''"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def join_errors(errors: list[str], head: str = "invalid config: ") -> str:
    """One line: `head` + as many of `errors` as fit in MAX_MESSAGE characters, then how many more there are."""
    errors = [" ".join(e.split()) for e in errors]
    shown: list[str] = []
    for i, err in enumerate(errors):
        rest = len(errors) - i - 1
        tail = f" (and {rest} more)" if rest else ""
        line = head + "; ".join(shown + [err]) + tail
        if len(line) > MAX_MESSAGE:
            if not shown:  # the first problem alone is too long: cut it
                room = MAX_MESSAGE - len(head) - len(f" (and {rest} more)" if rest else "") - 1
                shown.append(err[: max(room, 20)] + "…")
                continue
            return head + "; ".join(shown) + f" (and {len(errors) - len(shown)} more)"
        shown.append(err)
    return head + "; ".join(shown)
