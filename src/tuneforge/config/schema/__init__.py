"""The run configuration's schema, one strict pydantic model per section: base.py (Section and its strict checks),
data.py, train.py, run.py (RunConfig with model, distill, eval and output; the task and method bases).

The schema is the public config API, so every section is imported from this one place
(`from tuneforge.config.schema import RunConfig`), wherever it is defined. Every field has a description:
`tuneforge config-reference` and the web UI's help are built from them, so help text has one source. `task` and
`method` are open sections: their keys belong to the registered task or method named by `task.type` /
`method.name` (each owns its config class)."""

from tuneforge.config.schema.base import Section
from tuneforge.config.schema.data import (
    AugmentSection,
    BackTranslationSection,
    BalanceSection,
    CleanSection,
    DataSection,
    SplitSection,
)
from tuneforge.config.schema.run import (
    DistillSection,
    EvalSection,
    MethodConfig,
    ModelSection,
    OutputSection,
    RunConfig,
    TaskConfig,
)
from tuneforge.config.schema.train import (
    DeepSpeedSection,
    DistributedSection,
    EarlyStoppingSection,
    FsdpSection,
    TrainSection,
)

__all__ = [
    "Section",
    "RunConfig",
    "ModelSection",
    "DataSection",
    "SplitSection",
    "CleanSection",
    "AugmentSection",
    "BackTranslationSection",
    "BalanceSection",
    "TrainSection",
    "EarlyStoppingSection",
    "DistributedSection",
    "FsdpSection",
    "DeepSpeedSection",
    "DistillSection",
    "EvalSection",
    "OutputSection",
    "TaskConfig",
    "MethodConfig",
]
