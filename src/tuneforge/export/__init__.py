"""Exporting finished runs (layer 6): merge.py (adapters merged into a plain checkpoint), exporter.py (merged, ONNX,
int8 with parity against the trained model and speed) and report.py (what export prints)."""
