"""Tasks. Importing this package registers every built-in task in TASKS."""

# the order of registration is the order TASKS.names() lists them in
# isort: off
from tuneforge.tasks.base import TASKS, Prepared, Task
from tuneforge.tasks import causal_lm, classification, image_classification, multitask  # noqa: F401  (registration)
# isort: on

__all__ = ["TASKS", "Prepared", "Task"]
