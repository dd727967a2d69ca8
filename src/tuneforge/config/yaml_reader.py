"""Reading YAML safely: a SafeLoader that refuses nesting and number literals too large to handle, and the
config file reader whose every failure is one ConfigError line naming the file (and the line and column)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tuneforge.config.messages import key_text, shorten
from tuneforge.errors import ConfigError, first_line

#: deeper YAML is refused while parsing (Python's recursion limit would otherwise end it with a RecursionError)
MAX_DEPTH = 64
#: longest number literal read from YAML; longer ones are refused before Python converts them
MAX_NUMBER_CHARS = 100


class TooBig(yaml.YAMLError):
    """YAML that is syntactically fine but too deep or holds too long a number."""

    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH and number literals longer than MAX_NUMBER_CHARS
    (Python refuses integers above 4,300 digits, and a long one takes seconds to convert)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise TooBig(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _number(self, node, construct):
        if len(str(node.value)) > MAX_NUMBER_CHARS:
            raise TooBig(f"a number of {len(str(node.value))} characters is too large", node.start_mark)
        return construct(self, node)


_Loader.add_constructor(
    "tag:yaml.org,2002:int", lambda loader, node: loader._number(node, yaml.SafeLoader.construct_yaml_int)
)
_Loader.add_constructor(
    "tag:yaml.org,2002:float", lambda loader, node: loader._number(node, yaml.SafeLoader.construct_yaml_float)
)


def yaml_load(text: str) -> Any:
    """Parse YAML text with the guarded loader (raises TooBig for too deep nesting or too long numbers)."""
    return yaml.load(text, Loader=_Loader)


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML config file ({} for an empty file). Raises ConfigError, in one line, when the file is
    missing, unreadable, not UTF-8, malformed or not a mapping."""
    shown = key_text(path, 120)
    try:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {shown}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{shown}: cannot be read ({shorten(getattr(exc, 'strerror', None) or str(exc), 80, text=True)})"
        ) from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise ConfigError(f"{shown}: malformed YAML{where}: {shorten(problem, 100, text=True)}") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"{shown}: malformed YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a scalar PyYAML cannot convert
        raise ConfigError(f"{shown}: malformed YAML: {shorten(str(exc), 100, text=True)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: the top level must be a mapping of sections (model, data, task, ...)")
    return data
