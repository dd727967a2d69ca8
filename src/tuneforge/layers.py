"""The package's layers, lowest first: a module may import its own layer and the layers below, never above.

This table is the one statement of the architecture: `tests/test_layers.py` checks every `import` in the
package against it (imports inside functions too), and docs/ARCHITECTURE.md draws it. A module belongs to
the layer of the longest prefix below that names it.
"""

from __future__ import annotations

LAYERS: dict[int, tuple[str, ...]] = {
    # pure building blocks: errors, name registries, numeric kernels, metric and plot functions
    1: ("tuneforge.errors", "tuneforge.registry", "tuneforge.layers", "tuneforge.kernels", "tuneforge.evaluation"),
    # the run configuration: schema, YAML, overrides, machine checks (task/method sections through the registries)
    2: ("tuneforge.config",),
    # reading, formatting, templating, splitting, cleaning, augmenting and packing data: nothing here trains
    3: ("tuneforge.data",),
    # what is learned (tasks), which parameters learn (methods), loading base models and generating with them
    4: ("tuneforge.models", "tuneforge.methods", "tuneforge.tasks"),
    # the one training engine; loading a finished run and predicting through its task
    5: ("tuneforge.training", "tuneforge.inference", "tuneforge.generation"),
    # workflows that use training or finished runs
    6: (
        "tuneforge.cleaning",
        "tuneforge.compare",
        "tuneforge.export",
        "tuneforge.search",
        "tuneforge.serve",
        "tuneforge.webui",
    ),
    # the public Python API and the command line
    7: ("tuneforge", "tuneforge.__main__", "tuneforge.cli"),
}

#: pairs in one layer that must stay independent: a task never imports a method, a method never imports a task
SEPARATE: tuple[tuple[str, str], ...] = (
    ("tuneforge.tasks", "tuneforge.methods"),
    ("tuneforge.methods", "tuneforge.tasks"),
)


def owner(module: str) -> str:
    """The table entry (package or module prefix) that `module` belongs to: the longest matching prefix."""
    best = ""
    for prefixes in LAYERS.values():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best = p
    if not best:
        raise KeyError(f"{module} is not in the layer table (tuneforge/layers.py)")
    return best


def layer_of(module: str) -> int:
    """The layer number of a dotted module name inside tuneforge. Raises KeyError for a module not in the table."""
    entry = owner(module)
    return next(n for n, prefixes in LAYERS.items() if entry in prefixes)


def allowed(importer: str, imported: str) -> str | None:
    """None when `importer` may import `imported`, else why not (one line)."""
    a, b = layer_of(importer), layer_of(imported)
    if b > a:
        return f"layer {a} ({owner(importer)}) may not import layer {b} ({owner(imported)})"
    pair = (owner(importer), owner(imported))
    if pair in SEPARATE:
        return f"{pair[0]} may not import {pair[1]} (tasks and methods are independent)"
    return None
