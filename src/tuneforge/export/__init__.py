"""Exporting trained runs: merged checkpoints (merge.py)."""
