"""Tasks. Importing this package registers every built-in task in TASKS."""
from tuneforge.tasks.base import TASKS, Prepared, Task
from tuneforge.tasks import causal_lm, classification, image_classification, multitask  # noqa: F401  (registration)

__all__ = ["TASKS", "Task", "Prepared"]
