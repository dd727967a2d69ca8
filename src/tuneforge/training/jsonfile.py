"""The JSON files of a run directory (status.json, efficiency.json, run.lock, a search's records): written
atomically, read tolerantly (a file cut by a kill reads as empty), and the timestamps they hold."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path


def write_json(path: str | Path, data) -> None:
    """Atomic write: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def read_dict(path: Path) -> dict:
    """A JSON object written by tuneforge, or {} when it is missing, cut by a kill, or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def now() -> str:
    """The local time to the second, as run files record it (ISO 8601)."""
    return datetime.now().isoformat(timespec="seconds")
