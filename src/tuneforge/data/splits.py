"""The exact split a run used, saved in its data/split/ directory: the held-out records (validation, test) as
JSON lines, in the task's own record format, and the ids of the source rows that formed the training split.
Later steps (`tuneforge eval`, `export`) read the run's test split back from here instead of re-running the
reading, splitting and cleaning that produced it. `data_seed` is the one rule for the seed that split was drawn
with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

SPLIT_DIR = "split"
MANIFEST = "split.json"


def data_seed(cfg: RunConfig) -> int:
    """The seed of everything that reads, splits, samples and cleans a run's data: `data.split.seed`, else
    `train.seed` (so one seed can change the split while the training order stays, or the other way round)."""
    seed = cfg.data.split.seed
    return seed if seed is not None else cfg.train.seed


def save_split(
    data_dir: str | Path, held_out: dict[str, list], train_ids: list | None, source: str, sizes: dict[str, int]
) -> Path:
    """Write held_out[name] to DATA_DIR/split/<name>.jsonl (one JSON record per line) and split.json."""
    out = Path(data_dir) / SPLIT_DIR
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, records in held_out.items():
        if not records:
            continue
        path = out / f"{name}.jsonl"
        tmp = path.with_name(path.name + ".partial")
        with tmp.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(path)
        files[name] = path.name
    manifest = {
        "source": source,
        "sizes": sizes,
        "files": files,
        "train_ids": [int(i) for i in train_ids] if train_ids is not None else None,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False))
    return out


def saved_split(run_dir: str | Path) -> bool:
    """Whether the run saved its split (runs written before splits were saved did not)."""
    return (Path(run_dir) / "data" / SPLIT_DIR / MANIFEST).is_file()


def split_file(run_dir: str | Path, name: str) -> Path | None:
    """RUN/data/split/<name>.jsonl when the run saved that split, else None."""
    path = Path(run_dir) / "data" / SPLIT_DIR / f"{name}.jsonl"
    return path if path.is_file() else None


def load_split(run_dir: str | Path, name: str) -> list | None:
    """The saved records of split `name` of a run, or None when the run did not save it (older runs)."""
    path = split_file(run_dir, name)
    if path is None:
        return None
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
