"""Every fine-tuning method on the classification quickstart (builtin MiniLM, builtin rotten tomatoes, CPU):
trainable %, training samples/s, peak memory and test accuracy, read from each run directory.

    python benchmarks/cpu_methods.py                                # every configs/methods/*-classification.yaml
    python benchmarks/cpu_methods.py --methods lora full qlora --set train.epochs=1
    python benchmarks/cpu_methods.py --methods adapter ia3 --set data.max_train_samples=2000 --set train.epochs=1

Each method runs in its own process (`tuneforge train`), so peak RSS is per method. Results go to
runs/bench-methods/<method>/ and a summary to runs/bench-methods/summary.json (appended per method, so a
long benchmark can be run in parts). Targets checked at the end: LoRA >= 98% of full fine-tuning's test
accuracy with < 2% of the parameters trained; QLoRA within 1 point of LoRA.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_method(name: str, overrides: list[str], out_root: Path) -> dict:
    cfg = REPO / "configs" / "methods" / f"{name}-classification.yaml"
    if not cfg.is_file():
        raise SystemExit(f"no config {cfg}")
    out = out_root / name
    cmd = [
        sys.executable,
        "-m",
        "tuneforge",
        "train",
        str(cfg),
        f"output.dir={out}",
        "output.overwrite=true",
        "train.report_to=none",
        *overrides,
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    wall = time.time() - t0
    if proc.returncode != 0:
        return {
            "method": name,
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed",
            "wall_seconds": round(wall, 1),
        }
    eff = json.loads((out / "efficiency.json").read_text())
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    test = metrics.get("test") or {}
    return {
        "method": name,
        "overrides": overrides,
        "trainable_percent": eff["trainable_percent"],
        "trainable_params": eff["trainable_params"],
        "train_samples_per_second": eff["train_samples_per_second"],
        "train_seconds": eff["train_seconds"],
        "peak_rss_mb": eff["peak_rss_mb"],
        "epochs": eff["epochs"],
        "test_accuracy": test.get("accuracy"),
        "test_f1_macro": test.get("f1_macro"),
        "wall_seconds": round(wall, 1),
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"{'method':<12} {'trainable%':>10} {'samples/s':>10} {'peak MB':>9} {'test acc':>9} {'epochs':>7}  overrides"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['method']:<12} error: {r['error']}")
            continue
        print(
            f"{r['method']:<12} {r['trainable_percent']:>10.3f} {r['train_samples_per_second']:>10.1f} "
            f"{r['peak_rss_mb']:>9.0f} {r['test_accuracy']:>9.4f} {r['epochs']:>7.2f}  {' '.join(r['overrides'])}"
        )
    by = {r["method"]: r for r in rows if "error" not in r}
    if "lora" in by and "full" in by:
        ratio = by["lora"]["test_accuracy"] / by["full"]["test_accuracy"]
        ok = ratio >= 0.98 and by["lora"]["trainable_percent"] < 2
        print(
            f"LoRA / full test accuracy = {ratio:.4f} with {by['lora']['trainable_percent']:.2f}% trainable "
            f"(target >= 0.98 with < 2%): {'met' if ok else 'MISSED'}"
        )
    if "lora" in by and "qlora" in by:
        gap = 100 * (by["lora"]["test_accuracy"] - by["qlora"]["test_accuracy"])
        print(
            f"QLoRA is {gap:+.2f} points below LoRA (target: within 1 point): "
            f"{'met' if abs(gap) <= 1 or gap < 0 else 'MISSED'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--methods", nargs="*", help="config stems under configs/methods without -classification (default: all)"
    )
    ap.add_argument("--set", action="append", default=[], help="override applied to every run (repeatable)")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench-methods"))
    ap.add_argument("--summary-only", action="store_true", help="print the saved summary and exit")
    args = ap.parse_args()
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    summary_file = out_root / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if not args.summary_only:
        names = args.methods or sorted(
            p.name.removesuffix("-classification.yaml")
            for p in (REPO / "configs" / "methods").glob("*-classification.yaml")
        )
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            summary[name] = run_method(name, args.set, out_root)
            summary_file.write_text(json.dumps(summary, indent=2))
            print(json.dumps(summary[name]), file=sys.stderr, flush=True)
    print_table(list(summary.values()))


if __name__ == "__main__":
    main()
