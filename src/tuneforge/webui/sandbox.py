"""The folders the web UI may touch: every path a page names is resolved (symlinks and `..` included) and must lie
inside the runs directory or one of the data folders given at start; anything else is a PathError."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tuneforge.errors import PathError, RunDirError
from tuneforge.training.rundir import RunDir

#: the web UI's own files under the runs directory: configs it wrote, reports, exports, data reports
UI_DIR = ".webui"
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str, default: str = "run") -> str:
    """A plain directory name made of `text` (letters, digits, dot, dash, underscore)."""
    name = _SLUG.sub("-", str(text)).strip("-.")[:80]
    return name or default


class Sandbox:
    """The runs directory and data folders of one web UI: which paths a page may name, and how it names them.

    Args:
        runs_dir: where runs, studies, reports and exports are written (created if missing).
        data_dirs: folders whose files may be read as data or configs (default: the working directory).
        cwd: the working directory of the commands started (relative paths in configs resolve against it).
    """

    def __init__(self, runs_dir: str | Path, data_dirs=(), cwd: str | Path | None = None):
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.cwd = Path(cwd or os.getcwd()).resolve()
        self.data_dirs = [Path(d).expanduser().resolve() for d in (data_dirs or [self.cwd])]
        self.ui_dir = self.runs_dir / UI_DIR

    @property
    def roots(self) -> list[Path]:
        """The folders a page may name paths in: the runs directory and the data folders."""
        return [self.runs_dir, *self.data_dirs]

    def inside(self, path: str | Path, roots: list[Path] | None = None, must_exist: bool = True) -> Path:
        """`path` resolved (relative ones against the working directory), if it lies inside one of `roots`
        (default: the runs directory and the data folders). Raises PathError otherwise."""
        text = str(path).strip()
        if not text:
            raise PathError("no path given")
        p = Path(text).expanduser()
        resolved = (p if p.is_absolute() else self.cwd / p).resolve()
        roots = self.roots if roots is None else roots
        if not any(resolved == r or r in resolved.parents for r in roots):
            shown = ", ".join(str(r) for r in roots)
            raise PathError(
                f"{text} is outside the folders this web UI may use ({shown}); start "
                f"`tuneforge webui --data-dir DIR` to allow another folder"
            )
        if must_exist and not resolved.exists():
            raise PathError(f"{text} does not exist")
        return resolved

    def data_source(self, text: str) -> str:
        """A data or model reference for a config: `builtin:` aliases as they are, paths checked to lie inside
        the allowed folders (returned as given, so the saved config stays portable)."""
        text = str(text or "").strip()
        if not text or text.startswith("builtin:"):
            return text
        self.inside(text)
        return text

    def run_dir(self, name_or_path: str) -> Path:
        """A run directory inside the runs directory, by its path relative to it or its absolute path."""
        text = str(name_or_path or "").strip()
        if not text:
            raise PathError("no run selected")
        p = Path(text)
        path = self.inside(p if p.is_absolute() else self.runs_dir / p, [self.runs_dir])
        if not RunDir(path).is_run():
            raise RunDirError(f"{text} is not a tuneforge run")
        return path

    def rel_or_abs(self, path: Path) -> str:
        """`path` relative to the working directory when inside it (how a shell there would name it)."""
        try:
            return str(Path(path).resolve().relative_to(self.cwd))
        except ValueError:
            return str(path)

    def rel(self, path: Path) -> str:
        """`path` relative to the runs directory when inside it (a run's name on the pages)."""
        try:
            return str(Path(path).resolve().relative_to(self.runs_dir))
        except ValueError:
            return str(path)
