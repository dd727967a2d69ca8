"""Name -> class registries for tasks and methods, and the one place their members come from.

The registries live at the bottom of the package so that the config layer can look up a task's or method's
config class by name without importing `tasks/` or `methods/`. Their built-in members register themselves on
import (`@TASKS.register(...)`); a registry imports its package the first time it is asked for a member
(`builtins`), and then any third-party plugins declared under the entry-point group `tuneforge.tasks` /
`tuneforge.methods`. Loading lazily keeps `tuneforge --help` and config-only commands free of torch.
"""

from __future__ import annotations

import difflib
import importlib
import threading
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
    """Members by name. `builtins`: the package whose import registers the built-in members; `group`: the
    entry-point group of third-party members (each entry point names a module or class that registers itself
    on import)."""

    def __init__(self, kind: str, builtins: str | None = None, group: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins, self._group = builtins, group
        self._loaded = builtins is None and group is None
        self._lock = threading.RLock()

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # before importing: the members' own `register` calls must not recurse
            if self._builtins:
                importlib.import_module(self._builtins)
            if self._group:
                from importlib.metadata import entry_points

                for ep in entry_points(group=self._group):
                    try:
                        ep.load()
                    except Exception as exc:
                        import logging

                        logging.getLogger("tuneforge").warning(
                            "plugin %s (%s) failed to load: %s", ep.name, self._group, exc
                        )

    def register(self, name: str):
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove a member (for tests and plugins that register one for a while)."""
        self._items.pop(name, None)

    def get(self, name: str, key: str = "") -> T:
        self._load()
        if name not in self._items:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} '{name}'{closest(name, self._items)}; "
                f"available: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


#: what is learned (tuneforge.tasks.base.Task subclasses)
TASKS: Registry = Registry("task", builtins="tuneforge.tasks", group="tuneforge.tasks")
#: which parameters learn (tuneforge.methods.base.Method subclasses)
METHODS: Registry = Registry("method", builtins="tuneforge.methods", group="tuneforge.methods")
#: label-noise features that need a model or training (`data.clean.noise_features`), from tuneforge.cleaning
NOISE_FEATURES: Registry = Registry("label-noise feature", builtins="tuneforge.cleaning")
