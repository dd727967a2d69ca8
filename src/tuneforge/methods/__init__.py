"""Fine-tuning methods (layer 4): which parameters learn, one module per method behind base.py's contract (peft_common,
layers and prefix_encoder are shared parts). Importing this package registers every built-in method in METHODS."""

# the order of registration is the order METHODS.names() lists them in (help texts, the web UI's choices)
# isort: off
from tuneforge.methods.base import METHODS, Method, MethodContext, count_parameters
from tuneforge.methods import full, lora  # noqa: F401  (registration)
from tuneforge.methods import adapter, freeze, ia3, prefix, prompt  # noqa: F401  (registration)
# isort: on

__all__ = ["METHODS", "Method", "MethodContext", "count_parameters"]
