"""Measured method comparison: train several methods on the same task and budget (`compare`), and build the
comparison report from any run directories (`build_report`)."""

from tuneforge.compare.plan import ALL_METHODS
from tuneforge.compare.report import build_report
from tuneforge.compare.runner import compare

__all__ = ["compare", "build_report", "ALL_METHODS"]
