"""Held-out accuracy of GRPO over seeds: the quickstart (configs/quickstart/grpo-arithmetic-smollm2.yaml:
SmolLM2-135M-Instruct + LoRA r16, DAPO loss, exact-answer and format rewards, 60 steps of 2 prompts x 4 answers) on
builtin:arithmetic, each seed with its own problems (the data set's `seed` and `train.seed` both set to the seed), and
the same 200 held-out problems answered by the base model and by the tuned one (greedy, the run's own final
evaluation: eval/metrics.json).

Printed: per seed and as the mean ± spread (population std; min-max) over seeds, the held-out greedy accuracy of the
base model and of the tuned one and its gain in points, the tuned model's accuracy over its sampled answers, the
format reward, and the training minutes. Target of issue 35: the tuned greedy accuracy at least +10 points over the
base.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/grpo.py [--seeds 1,2,3] [--out DIR] [--json PATH]
        [--set KEY=VALUE ...]

One seed takes about 20-25 minutes on 2 CPU cores (training, then 200 greedy answers from each model and 4 sampled
answers per problem); the default 3 seeds about 70 minutes. Runs already finished under --out are read back, not
trained again. `--set` adds config overrides to every run (for example `--set train.max_steps=2` to check the
script; such a run is not a measurement of the quickstart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from bench_runs import ROOT, finish, spread, train_run

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIG = ROOT / "configs" / "quickstart" / "grpo-arithmetic-smollm2.yaml"
TARGET_GAIN = 0.10


def result(run_dir: Path) -> dict | None:
    """{base, tuned, sampled, format, train_seconds} of a finished run, None when it has no test metrics."""
    try:
        test = json.loads((run_dir / "eval" / "metrics.json").read_text())["test"]
        base, tuned, sampled = test["base_greedy"], test["greedy"], test["sampled"]
        out = {"base": base["accuracy"], "tuned": tuned["accuracy"], "sampled": sampled["accuracy"]}
        out["format"] = tuned.get("reward_format")
        out["prompts"] = test.get("prompts")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        out["train_seconds"] = float(json.loads((run_dir / "efficiency.json").read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        out["train_seconds"] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--out", default="runs/bench-grpo", help="where the runs go (finished runs are reused)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    rows = []
    for seed in seeds:
        run_dir = Path(args.out) / f"grpo-seed{seed}"
        res = result(run_dir)
        if res is None:
            data = f"data.train=builtin:arithmetic?n=1200&steps=1-2&seed={seed}"
            _, error = train_run(CONFIG, [f"train.seed={seed}", data, *args.set], run_dir, f"grpo seed {seed}")
            res = None if error else result(run_dir)
            if res is None:
                rows.append({"seed": seed, "error": error or "no held-out metrics"})
                continue
        row = {"seed": seed, **res, "gain": res["tuned"] - res["base"]}
        rows.append(row)
        print(
            f"[grpo] seed {seed}: base {row['base']:.3f} -> tuned {row['tuned']:.3f} "
            f"({row['gain'] * 100:+.1f} points), sampled {row['sampled']:.3f}",
            flush=True,
        )
    ok = [r for r in rows if "error" not in r]
    lines = [
        "| seed | held-out problems | base greedy accuracy | tuned greedy accuracy | gain (points) | tuned sampled "
        "accuracy | format reward | training minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ok:
        minutes = f"{r['train_seconds'] / 60:.1f}" if r.get("train_seconds") else "-"
        lines.append(
            f"| {r['seed']} | {r.get('prompts')} | {r['base']:.3f} | {r['tuned']:.3f} | {r['gain'] * 100:+.1f} | "
            f"{r['sampled']:.3f} | {r['format'] if r['format'] is None else round(r['format'], 3)} | {minutes} |"
        )
    if len(ok) > 1:
        lines.append(
            f"| mean over {len(ok)} | | {spread([r['base'] for r in ok])} | {spread([r['tuned'] for r in ok])} | "
            f"{spread([r['gain'] * 100 for r in ok], 1)} | {spread([r['sampled'] for r in ok])} | | |"
        )
    report = "\n".join(lines)
    print("\n" + report)
    if ok:
        gain = statistics.fmean(r["gain"] for r in ok)
        verdict = "met" if gain >= TARGET_GAIN else "NOT met"
        print(f"\nmean gain {gain * 100:+.1f} points (target >= +{TARGET_GAIN * 100:.0f}): {verdict}")
    return finish(rows, report, args.set, args.json, "the quickstart as shipped")


if __name__ == "__main__":
    sys.exit(main())
