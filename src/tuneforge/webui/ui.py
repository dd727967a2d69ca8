"""What every page shares: the translated labels (switched in place by the language selector) and the context
a page is built with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from tuneforge.webui.i18n import text
from tuneforge.webui.workspace import Workspace


class Tr:
    """Labels in the page's language. `reg(component, label="key", ...)` records which attributes of a component
    are translated strings, so the language switch can update all of them in one event."""

    def __init__(self, lang: str):
        self.lang = lang
        self.items: list[tuple[Any, dict[str, str]]] = []

    def __call__(self, key: str, **fmt) -> str:
        return text(key, self.lang, **fmt)

    def reg(self, component, **attrs):
        """`attrs`: attribute (label, info, value for buttons and headings) -> a key of i18n.STRINGS, or an
        (English, Chinese) pair for text that is not in the table (a config field's help text)."""
        self.items.append((component, attrs))
        return component

    @property
    def components(self) -> list:
        return [c for c, _ in self.items]

    def updates(self, lang: str) -> list:
        return [gr.update(**{attr: pick(key, lang) for attr, key in attrs.items()}) for _, attrs in self.items]


def pick(key, lang: str) -> str:
    """The text of a string key, or of an (English, Chinese) pair, in `lang`."""
    if isinstance(key, tuple):
        return key[1] if lang == "zh" else key[0]
    return text(key, lang)


@dataclass
class Ctx:
    """What a page builder gets: the workspace, the translator, and components other pages listen to."""

    ws: Workspace
    tr: Tr
    lang: Any = None  # gr.State: the language of this browser session
    shared: dict = field(default_factory=dict)


def lang_of(value) -> str:
    return value if value in ("en", "zh") else "en"


def message(kind: str, body: str) -> str:
    """A status line for a Markdown component: errors stand out, in one line."""
    body = " ".join(str(body).split())
    return f"**⚠ {body}**" if kind == "error" else body
