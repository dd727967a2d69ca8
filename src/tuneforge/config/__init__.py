"""The run configuration: the schema (schema/), reading YAML, overrides, validation and loading (yaml_reader,
overrides, validation, loader), machine checks (environment) and the generated reference (reference)."""

from tuneforge.config.loader import dump_config, load_config, resolved_config
from tuneforge.config.overrides import apply_overrides
from tuneforge.config.schema import MethodConfig, RunConfig, Section, TaskConfig
from tuneforge.config.validation import config_problems, validate_config

__all__ = [
    "RunConfig",
    "MethodConfig",
    "TaskConfig",
    "Section",
    "load_config",
    "validate_config",
    "config_problems",
    "apply_overrides",
    "dump_config",
    "resolved_config",
]
