"""Shared by the benchmarks that train shipped configs over seeds (preference.py, grpo.py): one `tuneforge train`
in its own subprocess with its output in a log beside the run, and a mean with its spread."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train_run(config: Path, overrides: list[str], run_dir: Path, tag: str) -> tuple[float | None, str | None]:
    """`tuneforge train CONFIG OVERRIDES` into `run_dir` (output.dir and overwrite are added), its output in
    <run_dir>.log. Returns (seconds, None), or (seconds, the log's last lines) when it failed."""
    cmd = [sys.executable, "-m", "tuneforge", "train", str(config), f"output.dir={run_dir}", "output.overwrite=true"]
    cmd += overrides
    print(f"[{tag}] {' '.join(cmd[2:])}", flush=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-3:])
        print(f"[{tag}] FAILED (exit {proc.returncode}): {tail}", flush=True)
        return seconds, f"exit {proc.returncode}: {tail}"
    return seconds, None


def spread(values: list[float], digits: int = 3) -> str:
    """`mean ± population std (min-max)` of `values`; the value alone for one, `-` for none."""
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    lo, hi = min(values), max(values)
    return f"{mean:.{digits}f} ± {statistics.pstdev(values):.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def finish(rows: list[dict], table: str, overrides: list[str], json_path: str | None, shipped: str) -> int:
    """Say when runs were not the shipped configs (`overrides`), write every row and the table to `json_path`; the
    exit status: 1 when a run failed."""
    if overrides:
        print(f"\n(overrides for every run: {' '.join(overrides)}; not {shipped})")
    if json_path:
        Path(json_path).write_text(json.dumps({"rows": rows, "table": table, "overrides": overrides}, indent=2))
    return 1 if any("error" in r for r in rows) else 0
