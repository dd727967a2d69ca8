"""A tiny name -> class registry shared by methods and tasks."""
from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from tuneforge.errors import ConfigError

T = TypeVar("T")


def closest(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    choices = [str(c) for c in choices]
    prefixed = [c for c in choices if word and c.startswith(str(word))]  # 'acc' -> 'accuracy'
    match = prefixed[:1] or difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str):
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str, key: str = "") -> T:
        if name not in self._items:
            where = f"{key}: " if key else ""
            raise ConfigError(f"{where}unknown {self.kind} '{name}'{closest(name, self._items)}; "
                              f"available: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
