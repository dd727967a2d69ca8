"""A cache of model outputs over a data set (a distillation teacher's logits or answers), keyed by what they
depend on, kept in the run directory so that a resumed run never recomputes them."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("tuneforge")


def cached_outputs(cache_dir: Path, key: dict, compute) -> np.ndarray:
    """`compute()` once per `key` (teacher fingerprint, inputs): kept in cache_dir/teacher_outputs.npz, so a
    resumed run or a second epoch never runs the teacher again."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = cache_dir / "teacher_outputs.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                if str(f["key"]) == digest:
                    log.info("distillation: teacher outputs from the cache in %s", path)
                    return f["outputs"]
        except (OSError, ValueError, KeyError):
            pass
    out = np.asarray(compute(), dtype=np.float32)
    tmp = path.with_name("teacher_outputs.partial.npz")
    np.savez(tmp, outputs=out, key=np.asarray(digest))
    tmp.replace(path)
    return out


def cached_json(cache_dir: Path, name: str, key: dict, compute) -> list:
    """Like `cached_outputs` for JSON-able results (a teacher's generated answers): cache_dir/<name>.json."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = cache_dir / f"{name}.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == digest:
                log.info("distillation: %s from the cache in %s", name, path)
                return saved["outputs"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass
    out = compute()
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps({"key": digest, "outputs": out}, ensure_ascii=False))
    tmp.replace(path)
    return out
