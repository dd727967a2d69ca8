"""What the Train page computes, without gradio: the config its widgets make and the command line that runs it,
the field a validation problem names, the data preview, and the configs, data and models it offers."""

from __future__ import annotations

import copy
import re
from typing import Any

from tuneforge.webui.fields import FieldSpec, fields_for
from tuneforge.webui.form import form_to_raw
from tuneforge.webui.i18n import text
from tuneforge.webui.workspace import Workspace

DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


def shipped_configs(ws: Workspace) -> list[str]:
    """Run configs the page can load: configs/ of the working directory and the ones saved from this UI."""
    found = []
    for root in (ws.cwd / "configs", ws.ui_dir / "configs"):
        if root.is_dir():
            found += [p for p in sorted(root.rglob("*.yaml")) if "search" not in p.relative_to(root).parts[:1]]
    return [str(p.relative_to(ws.cwd)) if ws.cwd in p.parents else str(p) for p in found]


def data_choices(ws: Workspace, limit: int = 200) -> list[str]:
    """Data sources the page offers: the builtin data sets, then up to `limit` data files in the data folders."""
    from tuneforge.data.builtin_sets import BUILTIN_DATA

    out = [f"builtin:{n}" for n in BUILTIN_DATA]
    for root in ws.data_dirs:
        for p in sorted(root.rglob("*")):
            if len(out) >= limit:
                return out
            rel = p.relative_to(root)
            if any(part.startswith(".") or part in ("runs", "node_modules", "src") for part in rel.parts[:-1]):
                continue
            if p.suffix in DATA_SUFFIXES and p.is_file():
                out.append(str(p.relative_to(ws.cwd)) if ws.cwd in p.parents else str(p))
    return out


def model_choices() -> list[str]:
    """The builtin models, as `builtin:<alias>`."""
    from tuneforge.models.builtins import BUILTIN_MODELS

    return [f"builtin:{m.alias}" for m in BUILTIN_MODELS.values()]


def compose(specs: list[FieldSpec], task: str, method: str, base: dict | None, values: list) -> dict:
    """The raw config of the form: `values` lines up with `specs` (every field of every group); only the
    chosen task's and method's groups count. Raises ValueError('<key>: <why>') for a value that does not parse."""
    wanted = {(s.group, s.key) for s in fields_for(task, method)}
    chosen = {s.key: v for s, v in zip(specs, values) if (s.group, s.key) in wanted}
    return form_to_raw(task, method, chosen, base=base)


def cli_line(ws: Workspace, name: str) -> str:
    """The shell command that the Start button runs (`python -m tuneforge` shown as `tuneforge`)."""
    config, target, argv = ws.train_argv(name or "run")
    return " ".join(["tuneforge", "train", ws.rel_or_abs(config), f"output.dir={ws.rel_or_abs(target)}"])


def field_of_error(line: str, keys: list[str]) -> str | None:
    """The form key a validation problem (`key.path: what is wrong`) names: the longest key that is the
    problem's path or a prefix of it; for a problem of a whole section (`train: train.eval_steps is required
    when ...`), the first key its message names."""
    path, _, why = line.partition(":")
    path = path.strip()
    best = None
    for k in keys:
        if (path == k or path.startswith(k + ".")) and (best is None or len(k) > len(best)):
            best = k
    if best is None:  # the first key the message names
        found = [(m.start(), k) for k in keys for m in [re.search(rf"(?<![\w.]){re.escape(k)}(?![\w.])", why)] if m]
        best = min(found)[1] if found else None
    return best


def preview_data(ws: Workspace, source: str, text_column: str | None, label_column: str | None, lang: str):
    """(first rows, a note on the columns and labels) of a data source."""
    from tuneforge.data.columns import guess_columns
    from tuneforge.data.sources import read_table

    df = read_table(ws.data_source(source), "data.train")
    guessed = guess_columns(df, text_column, label_column)
    tcol = text_column if text_column in df.columns else guessed.get("data.text_column", (None,))[0]
    lcol = label_column if label_column in df.columns else guessed.get("data.label_column", (None,))[0]
    columns = ", ".join(f"`{c}`" for c in df.columns)
    lines = [f"**{len(df)} {text('rows', lang)}** · {text('columns', lang)}: {columns}"]
    if tcol:
        mark = f" ({text('guessed', lang)})" if tcol != text_column else ""
        lines.append(f"{text('text_column_is', lang)}: `{tcol}`{mark}")
    if lcol:
        mark = f" ({text('guessed', lang)})" if lcol != label_column else ""
        counts = df[lcol].astype(str).value_counts()
        shown = ", ".join(f"`{k}` {v}" for k, v in counts.head(20).items())
        lines.append(f"{text('label_column_is', lang)}: `{lcol}`{mark} · {text('labels', lang)}: {shown}")
    head = df.head(8).copy()
    for c in head.columns:  # conversations and other nested cells: shown as text
        head[c] = head[c].map(lambda v: v if isinstance(v, (str, int, float, bool)) or v is None else str(v)[:300])
    return head, "  \n".join(lines)


def as_widget(s: FieldSpec, value: Any) -> Any:
    """A field's widget value as its component holds it: numbers as text in text boxes."""
    if s.kind in ("int", "float"):
        return "" if value is None else str(value)
    return value


def without_keys(raw: dict, keys: set[str]) -> dict:
    """A copy of `raw` without the dotted `keys` (sections left empty by that are dropped too)."""
    out = copy.deepcopy(raw)
    for key in keys:
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    for section in ("task", "data", "method"):
        if out.get(section) == {}:
            out.pop(section)
    return out
