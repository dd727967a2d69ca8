"""The search space: a YAML mapping of run-config keys to what each may take, parsed, and sampled through an Optuna
trial (define-by-run, so a conditional sub-space is only sampled when its choice is taken). space_check.py checks
a space against the run config before any trial.

    train.learning_rate: {float: [1e-5, 1e-3], log: true}
    train.warmup_ratio: {float: [0.0, 0.2], step: 0.05}
    train.batch_size: {choice: [16, 32, 64]}
    method.name:
      choice:
        lora: {method.r: {int: [4, 64], log: true}, method.alpha: {choice: [16, 32]}}
        full: {train.learning_rate: {float: [1e-5, 1e-4], log: true}}

A conditional choice maps each value to the keys sampled only with it (`null` or `{}`: none). Keys are dotted
config paths (`train.learning_rate`), as in `key=value` overrides.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.messages import shorten
from tuneforge.config.overrides import set_path
from tuneforge.config.yaml_reader import read_yaml
from tuneforge.errors import ConfigError
from tuneforge.registry import closest

KINDS = ("float", "int", "choice")
#: a spec's keys besides its kind
OPTIONS = {"float": ("log", "step"), "int": ("log", "step"), "choice": ()}
#: values a choice may hold (what a YAML scalar reads as; Optuna stores them as they are)
SCALARS = (str, int, float, bool, type(None))


@dataclass
class Param:
    """One searched key. `branches`: for a conditional choice, the sub-space sampled with each value."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list = field(default_factory=list)
    branches: dict[Any, list[Param]] | None = None
    name: str = ""  # the Optuna parameter name (the key, or key@choice when a key is in several branches)

    def canonical(self) -> dict:
        """Plain data that identifies the parameter (for the space's fingerprint)."""
        out: dict = {"key": self.key, "kind": self.kind, "name": self.name}
        if self.kind == "choice":
            out["choices"] = self.choices
            if self.branches is not None:
                out["branches"] = {json.dumps(v): [p.canonical() for p in sub] for v, sub in self.branches.items()}
        else:
            out.update(low=self.low, high=self.high, log=self.log, step=self.step)
        return out


def load_space(path: str | Path) -> list[Param]:
    """Read and parse a search-space YAML file.

    Raises ConfigError for a missing or unreadable file or a malformed space (naming the key)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--space: {path} does not exist" if not p.exists() else f"--space: {path} is not a file")
    raw = read_yaml(p)
    return parse_space(raw, where=f"{p.name}: ")


def parse_space(raw: Any, where: str = "space: ") -> list[Param]:
    """Parse a space mapping ({config key: spec}) into Params, with their Optuna names assigned.

    Raises ConfigError naming the key for an unknown spec kind, an inverted or empty range, an empty choice, a
    sub-space under anything but a choice, a bad option or a key searched twice on one path."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{where}the search space must be a mapping of config keys to specs, for example "
            f"train.learning_rate: {{float: [1e-5, 1e-3], log: true}}"
        )
    params = _parse_mapping(raw, where, path=())
    _name(params)
    return params


def _parse_mapping(raw: dict, where: str, path: tuple[str, ...]) -> list[Param]:
    out: list[Param] = []
    for key, spec in raw.items():
        if not isinstance(key, str) or not key.strip() or any(not part for part in key.split(".")):
            raise ConfigError(
                f"{where}{shorten(key, 60)}: a key must be a dotted config path such as train.learning_rate"
            )
        if key in path:
            raise ConfigError(f"{where}{key}: searched again inside its own sub-space")
        out.append(_parse_spec(key, spec, where, path))
    return out


def _parse_spec(key: str, spec: Any, where: str, path: tuple[str, ...]) -> Param:
    at = f"{where}{key}"
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(
            f"{at}: give a spec such as {{float: [low, high]}}, {{int: [low, high]}} or "
            f"{{choice: [a, b]}}, got {shorten(spec, 60)}"
        )
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        unknown = [k for k in spec if k not in KINDS and not any(k in o for o in OPTIONS.values())]
        if unknown:
            raise ConfigError(
                f"{at}: unknown spec kind '{shorten(unknown[0], 40, text=True)}'"
                f"{closest(str(unknown[0])[:40], KINDS)}; use float, int or choice"
            )
        raise ConfigError(
            f"{at}: give exactly one of float, int or choice" + (f" (got {', '.join(kinds)})" if kinds else "")
        )
    kind = kinds[0]
    for option in spec:
        if option != kind and option not in OPTIONS[kind]:
            allowed = ", ".join(OPTIONS[kind]) or "no options"
            raise ConfigError(
                f"{at}: '{shorten(option, 40, text=True)}' does not apply to {kind} ({kind} takes {allowed})"
            )
    value = spec[kind]
    if kind == "choice":
        return _parse_choice(key, value, where, path)
    if isinstance(value, dict):
        raise ConfigError(
            f"{at}: only a choice can have sub-spaces (a mapping of values to keys); {kind} takes [low, high]"
        )
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{at}: {kind} takes [low, high], got {shorten(value, 60)}")
    low, high = value
    numeric = (int,) if kind == "int" else (int, float)
    for bound in (low, high):
        if (
            isinstance(bound, bool)
            or not isinstance(bound, numeric)
            or (isinstance(bound, float) and not math.isfinite(bound))
        ):
            raise ConfigError(
                f"{at}: {kind} bounds must be {'integers' if kind == 'int' else 'finite numbers'}, "
                f"got {shorten(bound, 40)}"
            )
    if low > high:
        raise ConfigError(f"{at}: inverted range [{low}, {high}]: low must not be above high")
    if low == high:
        raise ConfigError(f"{at}: empty range [{low}, {high}]: use a wider range, or set the key in the config")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{at}: log must be true or false, got {shorten(log, 40)}")
    if log and low <= 0:
        raise ConfigError(f"{at}: a log range needs low > 0, got [{low}, {high}]")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, numeric) or step <= 0:
            raise ConfigError(
                f"{at}: step must be a positive {'integer' if kind == 'int' else 'number'}, got {shorten(step, 40)}"
            )
        if log and (kind == "float" or step != 1):
            raise ConfigError(f"{at}: step and log cannot be combined")
        if step > high - low:
            raise ConfigError(f"{at}: step {step} is larger than the range [{low}, {high}]")
    if kind == "float":
        low, high = float(low), float(high)
        step = float(step) if step is not None else None
    return Param(key=key, kind=kind, low=low, high=high, log=log, step=step)


def _parse_choice(key: str, value: Any, where: str, path: tuple[str, ...]) -> Param:
    at = f"{where}{key}"
    if isinstance(value, dict):
        if not value:
            raise ConfigError(f"{at}: choice has no values")
        branches: dict[Any, list[Param]] = {}
        for option, sub in value.items():
            if not isinstance(option, SCALARS):
                raise ConfigError(f"{at}: choice values must be plain values, got {shorten(option, 40)}")
            if sub is None or sub == {}:
                branches[option] = []
                continue
            if not isinstance(sub, dict):
                raise ConfigError(
                    f"{at}: the sub-space of '{shorten(option, 40, text=True)}' must be a mapping of "
                    f"config keys to specs (or null), got {shorten(sub, 60)}"
                )
            branches[option] = _parse_mapping(sub, f"{at}={shorten(option, 40, text=True)}: ", path + (key,))
        return Param(key=key, kind="choice", choices=list(value), branches=branches)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"{at}: choice takes a list of values (or a mapping of values to sub-spaces), got {shorten(value, 60)}"
        )
    if not value:
        raise ConfigError(f"{at}: choice has no values")
    for option in value:
        if not isinstance(option, SCALARS):
            raise ConfigError(
                f"{at}: choice values must be plain values (numbers, strings, true/false/null), "
                f"got {shorten(option, 40)}"
            )
    dup = [v for i, v in enumerate(value) if v in value[:i]]
    if dup:
        raise ConfigError(f"{at}: choice lists {shorten(dup[0], 40)} twice")
    return Param(key=key, kind="choice", choices=list(value))


#: short names of common keys in progress lines and tables
SHORT = {
    "method.name": "method",
    "train.learning_rate": "lr",
    "train.batch_size": "bs",
    "train.weight_decay": "wd",
    "train.warmup_ratio": "warmup",
}


def short(key: str) -> str:
    """A key as progress lines and tables show it: `lr` for train.learning_rate, else its last part."""
    return SHORT.get(key, key.rsplit(".", 1)[-1])


def walk(params: list[Param]):
    """Every Param of a space, sub-spaces included, depth first."""
    for p in params:
        yield p
        for sub in (p.branches or {}).values():
            yield from walk(sub)


def _name(params: list[Param]) -> None:
    """Optuna names: the key, unless the key is searched in several places (then key@parent=value): Optuna keeps
    one distribution per name, and one key in two branches usually has two ranges."""
    counts: dict[str, int] = {}
    for p in walk(params):
        counts[p.key] = counts.get(p.key, 0) + 1

    def assign(items: list[Param], parent: str) -> None:
        for p in items:
            p.name = p.key if counts[p.key] == 1 or not parent else f"{p.key}@{parent}"
            for value, sub in (p.branches or {}).items():
                assign(sub, f"{p.key}={value}")

    assign(params, "")


def fingerprint(params: list[Param]) -> str:
    """A short hash of the space: a study refuses to continue with a different one."""
    text = json.dumps([p.canonical() for p in params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(params: list[Param]) -> list:
    """The space as plain data (stored with the study, shown in the report)."""
    return [p.canonical() for p in params]


def grid(params: list[Param]) -> dict[str, list]:
    """The grid sampler's search space ({optuna name: values}).

    Raises ConfigError for a space that is not a finite set of plain choices."""
    bad = next((p for p in params if p.kind != "choice" or p.branches is not None), None)
    if bad is not None:
        why = "a conditional choice" if bad.kind == "choice" else f"a {bad.kind} range"
        raise ConfigError(
            f"--sampler grid needs a finite space of plain choices; {bad.key} is {why} "
            f"(use {{choice: [...]}} for every key, or another sampler)"
        )
    return {p.name: list(p.choices) for p in params}


def grid_size(params: list[Param]) -> int:
    return math.prod(len(p.choices) for p in params)


def sample(trial, params: list[Param]) -> dict[str, Any]:
    """Values for one trial through Optuna's define-by-run API: {config key: value}. A conditional choice's
    sub-space is sampled only when that value is taken."""
    out: dict[str, Any] = {}
    for p in params:
        if p.kind == "float":
            out[p.key] = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
        elif p.kind == "int":
            out[p.key] = trial.suggest_int(p.name, p.low, p.high, log=p.log, step=p.step or 1)
        else:
            value = trial.suggest_categorical(p.name, p.choices)
            out[p.key] = value
            if p.branches is not None:
                out.update(sample(trial, p.branches[value]))
    return out


def set_key(raw: dict, key: str, value: Any) -> dict:
    """`raw` (a copy) with the dotted `key` set to `value` (sections created as needed). Setting `method.name` to
    another method keeps only the method keys that the new method has (the others belong to the old one)."""
    from tuneforge.registry import METHODS

    raw = copy.deepcopy(raw)
    if key == "method.name":
        section = raw.get("method") if isinstance(raw.get("method"), dict) else {}
        if section.get("name") != value and isinstance(value, str) and value in METHODS:
            fields = METHODS.get(value).Config.model_fields
            raw["method"] = {k: v for k, v in section.items() if k in fields}
    set_path(raw, key.split("."), value, key)
    return raw


def apply(raw: dict, values: dict[str, Any]) -> dict:
    """The base raw config with a trial's values set (method.name first, so its keys land in its section)."""
    order = sorted(values, key=lambda k: k != "method.name")
    for key in order:
        raw = set_key(raw, key, values[key])
    return raw
