"""Metrics and figures as pure functions (layer 1): classification, multi-label and language-model metrics,
speed measurements, loss curves and `save_figure` (every figure tuneforge writes goes through it)."""
