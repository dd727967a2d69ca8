from tuneforge.config.loader import (
    apply_overrides,
    config_problems,
    dump_config,
    load_config,
    resolved_config,
    validate_config,
)
from tuneforge.config.schema import MethodConfig, RunConfig, Section, TaskConfig

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
