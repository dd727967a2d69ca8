"""Tasks (layer 4): what is learned, one task per module family named by role (the task, its config, hooks,
report, distillation); base.py and hooks.py are the contract. Importing this package registers every built-in task."""

# the order of registration is the order TASKS.names() lists them in
# isort: off
from tuneforge.tasks.base import TASKS, Prepared, Task
from tuneforge.tasks import causal_lm, classification, image_classification, multitask, preference, reward, grpo  # noqa: F401
# isort: on

__all__ = ["TASKS", "Prepared", "Task"]
