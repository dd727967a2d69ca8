"""The layers of tuneforge/layers.py hold: every import in the package (inside functions too) points down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tuneforge.layers import LAYERS, allowed, layer_of

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tuneforge"


def _module(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, imported module) for every tuneforge import in `path` (a file under `src`); `from X import y` also
    yields X.y, since y may be a submodule of the real package."""
    module = _module(path, src)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "tuneforge"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tuneforge":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                # `from tuneforge.tasks import causal_lm` imports a module; `from tuneforge.x import f` a name in x
                is_module = (SRC / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    SRC / Path(*sub.split("."))
                ).is_dir()
                out.append((node.lineno, sub if is_module else target))
    return out


def violations(src: Path = SRC) -> list[str]:
    found = []
    for path in sorted((src / "tuneforge").rglob("*.py")):
        importer = _module(path, src)
        for line, imported in imports(path, src):
            why = allowed(importer, imported)
            if why:
                found.append(f"{path.relative_to(src.parent)}:{line}: {why}")
    return found


def test_every_module_has_a_layer():
    missing = []
    for path in PACKAGE.rglob("*.py"):
        try:
            layer_of(_module(path))
        except KeyError:
            missing.append(_module(path))
    assert not missing, f"modules missing from tuneforge/layers.py: {missing}"


def test_imports_point_down():
    found = violations()
    assert not found, "imports that point up:\n" + "\n".join(found)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    # a fake module in layer 3 importing layer 5 inside a function, and a relative import: both reported. It is
    # written into a copy of the tree's shape under tmp_path, never into src/ (a test scanning src/ in another
    # worker would see it)
    fake = tmp_path / "src" / "tuneforge" / "data" / "_layer_probe_tmp.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from tuneforge.training import engine\n    from ..inference import load_run\n")
    found = [v for v in violations(tmp_path / "src") if "_layer_probe_tmp" in v]
    assert found == [
        "src/tuneforge/data/_layer_probe_tmp.py:2: layer 3 (tuneforge.data) may not import layer 5 "
        "(tuneforge.training)",
        "src/tuneforge/data/_layer_probe_tmp.py:3: layer 3 (tuneforge.data) may not import layer 5 "
        "(tuneforge.inference)",
    ]


def test_inference_never_imports_generation():
    """One direction in layer 5: `generation` loads runs through `inference`, so `inference` never imports it."""
    found = [
        f"{path.relative_to(SRC.parent)}:{line}: {imported}"
        for path in sorted((PACKAGE / "inference").rglob("*.py"))
        for line, imported in imports(path)
        if imported == "tuneforge.generation" or imported.startswith("tuneforge.generation.")
    ]
    assert not found, found


@pytest.mark.parametrize(
    "importer,imported,ok",
    [
        ("tuneforge.config.loader", "tuneforge.registry", True),
        ("tuneforge.config.loader", "tuneforge.tasks.base", False),
        ("tuneforge.tasks.causal_lm", "tuneforge.methods.lora", False),
        ("tuneforge.methods.lora", "tuneforge.tasks", False),
        ("tuneforge.tasks.causal_lm", "tuneforge.models.loader", True),
        ("tuneforge.cli.train", "tuneforge.training.engine", True),
    ],
)
def test_table(importer, imported, ok):
    assert (allowed(importer, imported) is None) == ok


def test_architecture_doc_lists_every_layer():
    doc = (SRC.parent / "docs" / "ARCHITECTURE.md").read_text()
    for n, prefixes in LAYERS.items():
        for p in prefixes:
            assert f"`{p.removeprefix('tuneforge.') if p != 'tuneforge' else 'tuneforge'}" in doc, (n, p)


def test_files_by_role():
    """A module holds one concern: over 400 lines only when its docstring says why it is still one concern, never
    over 600 (translation tables aside); every package's __init__ says what is in it (docs/ARCHITECTURE.md)."""
    import ast

    too_big, undocumented = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        n = text.count("\n")
        table = path.name.endswith("_zh.py") or path.name == "i18n.py"
        head = "\n".join(text.splitlines()[:15]).lower()
        if not table and (n > 600 or (n > 400 and "one concern" not in head)):
            too_big.append(f"{path.relative_to(SRC)} ({n} lines)")
        if path.name == "__init__.py" and not ast.get_docstring(ast.parse(text)):
            undocumented.append(str(path.relative_to(SRC)))
    assert too_big == [] and undocumented == [], (too_big, undocumented)
