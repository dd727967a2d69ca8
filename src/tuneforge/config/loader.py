"""Loading a run config: a YAML file (or a mapping) read, `key=value` overrides applied, and validated into a
RunConfig; and writing one back as YAML.

Each step has its module: yaml_reader.py, overrides.py, validation.py (messages.py keeps every message to one
line under 300 characters)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from tuneforge.config.overrides import apply_overrides
from tuneforge.config.schema import RunConfig
from tuneforge.config.validation import validate_config
from tuneforge.config.yaml_reader import read_yaml


def _run_name(path: str | Path) -> str | None:
    """The default run name: the config file's name, made plain (no control characters), at most 100 chars."""
    name = re.sub(r"[\\/\x00-\x1f\x7f]", "_", Path(path).stem)[:100]
    return name if name.strip(". ") else None


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), raw: dict | None = None, environment: bool = True
) -> RunConfig:
    """Load a YAML file (or a mapping), apply `key=value` overrides and validate, including (with `environment`)
    whether the config can run on this machine, so `tuneforge train` refuses it before creating a run directory.
    Readers of a finished run's config that do not train (export, data inspection) pass environment=False."""
    data = read_yaml(path) if path is not None else copy.deepcopy(raw or {})
    data = apply_overrides(data, overrides)
    cfg = validate_config(data, environment=environment)
    if cfg.output.name is None and path is not None:
        cfg.output.name = _run_name(path)
    return cfg


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML, every key in schema order (what a run directory's config.yaml holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def resolved_config(raw: dict) -> dict:
    """`raw` validated, with every default filled in, as plain data: two configs that train the same run compare
    equal, even if one was saved before a defaulted key existed. Raises ConfigError like `validate_config`."""
    return validate_config(copy.deepcopy(raw)).model_dump(mode="json")
