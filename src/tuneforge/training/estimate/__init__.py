"""Per-device peak training memory before a run starts (core.py: the sum; skeleton, activations, states: its parts),
what to change when it does not fit (advice), the budget it is held against (budget, report) and the lines the
engine prints (lines)."""

from tuneforge.training.estimate.activations import image_side
from tuneforge.training.estimate.advice import suggestions
from tuneforge.training.estimate.budget import fits_line, gpu_memory, parse_memory
from tuneforge.training.estimate.core import estimate_memory
from tuneforge.training.estimate.lines import oom_message, start_of_run_lines
from tuneforge.training.estimate.report import FitReport, fit_report
from tuneforge.training.estimate.result import GIB, Estimate
from tuneforge.training.estimate.skeleton import nf4_bytes_per_param
from tuneforge.training.estimate.states import STRATEGIES

__all__ = [
    "GIB",
    "STRATEGIES",
    "Estimate",
    "FitReport",
    "estimate_memory",
    "fit_report",
    "fits_line",
    "gpu_memory",
    "image_side",
    "nf4_bytes_per_param",
    "oom_message",
    "parse_memory",
    "start_of_run_lines",
    "suggestions",
]
