"""The `--precision` option of the commands that run a trained model (predict, eval, chat, generate, serve)."""

from __future__ import annotations

import os

import typer

HELP = (
    "What the model computes in on a CPU: auto (bf16 autocast where the CPU has bf16 units and the task measured it "
    "faster at equal outputs, else fp32), fp32, or bf16. A GPU keeps the run's dtype."
)


def precision_option():
    return typer.Option("auto", "--precision", help=HELP, show_default=True)


def use_precision(value: str) -> None:
    """Check `value` and hand it to every model this command (and its workers) loads."""
    from tuneforge.inference.precision import ENV, asked_precision

    os.environ[ENV] = asked_precision(value)
