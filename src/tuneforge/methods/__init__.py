"""Fine-tuning methods. Importing this package registers every built-in method in METHODS."""
from tuneforge.methods.base import METHODS, Method, MethodContext, MethodError, count_parameters
from tuneforge.methods import full, lora  # noqa: F401  (registration)
from tuneforge.methods import adapter, freeze, ia3, prefix, prompt  # noqa: F401,E402  (registration)

__all__ = ["METHODS", "Method", "MethodContext", "MethodError", "count_parameters"]
