"""TPE vs random search on the classification quickstart, the same number of trials each, reduced budget per trial.

On builtin MiniLM + LoRA and builtin rotten tomatoes (CPU): the best validation accuracy reached after 5/10/20
trials (mean ± std over repeats), the test accuracy of each search's best config against the quickstart's own
settings trained at the same budget, and the LoRA rank each search chose.

    python benchmarks/search.py                                     # 20 trials x 3 repeats per sampler
    python benchmarks/search.py --trials 2 --repeats 1 --max-train 200 --max-steps 5     # a smoke run

Each search is one `tuneforge search` process (configs/search/sentiment-minilm-lora-space.yaml, --seed = the repeat,
no pruning, so both samplers spend the same budget); its study directory is OUT/<sampler>-<repeat>/ (trials.csv,
best.yaml, test.json). A finished search or baseline found there is reused (`--redo` runs it again). The summary
goes to OUT/summary.json and a markdown table to stdout. TPE's first trials are random draws (its startup trials:
6 of 20) from the same seed as the random sampler's, so both searches of a repeat start alike (a paired comparison);
they part after that.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/quickstart/sentiment-minilm-lora.yaml"
SPACE = REPO / "configs/search/sentiment-minilm-lora-space.yaml"
SAMPLERS = ("tpe", "random")
CHECKPOINTS = (5, 10, 20)
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}


def budget(args) -> list[str]:
    """Overrides for every trial and for the baseline: the same reduced budget."""
    out = ["train.report_to=none", "data.max_length=64", "train.logging_steps=50"]
    if args.max_train:
        out.append(f"data.max_train_samples={args.max_train}")
    if args.max_steps:
        out.append(f"train.max_steps={args.max_steps}")
    if args.validation:
        out.append(f"data.split.validation={args.validation}")
    return out


def _tuneforge(*cmd: str) -> float:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "tuneforge", *cmd], capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"tuneforge {cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.time() - t0


def run_search(sampler: str, repeat: int, args, out: Path) -> dict:
    study_dir = out / f"{sampler}-{repeat}"
    if args.redo or not (study_dir / "trials.csv").is_file():
        if args.redo and study_dir.exists():
            import shutil

            shutil.rmtree(study_dir)
        print(f"search {sampler} repeat {repeat}: {args.trials} trials ...", file=sys.stderr, flush=True)
        _tuneforge(
            "search",
            str(CONFIG),
            "--space",
            str(SPACE),
            "--trials",
            str(args.trials),
            "--sampler",
            sampler,
            "--pruner",
            "none",
            "--objectives",
            "quality",
            "--seed",
            str(repeat),
            "--study",
            f"bench-{sampler}-{repeat}",
            "--out",
            str(study_dir),
            *budget(args),
        )
    values = trial_values(study_dir / "trials.csv")
    # after k trials: the best of the first k started (a failed or pruned one among them adds nothing)
    best = {
        k: max(v for v in values[:k] if v is not None)
        for k in (*CHECKPOINTS, len(values))
        if k <= len(values) and any(v is not None for v in values[:k])
    }
    return {
        "sampler": sampler,
        "repeat": repeat,
        "trials": len(values),
        "values": values,
        "best_after": best,
        "test_accuracy": best_test_accuracy(study_dir),
        "r": chosen(study_dir, "method.r"),
    }


def trial_values(path: Path) -> list[float | None]:
    """Validation accuracy of each trial, in trial-number order (None: failed or pruned)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    column = next((c for c in ("accuracy", "metric", "value", "eval_accuracy") if c in rows[0]), None)
    if column is None:
        raise SystemExit(f"{path}: no metric column among {list(rows[0])}")
    rows.sort(key=lambda r: int(r.get("trial", r.get("number", 0))))
    return [
        float(r[column])
        if r.get("state", "COMPLETE").upper() == "COMPLETE" and r.get(column) not in (None, "")
        else None
        for r in rows
    ]


def _find(tree, key: str):
    """The first value under `key` (a dotted path, or its last part) anywhere in a nested YAML/JSON tree."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        head, _, rest = key.partition(".")
        if rest and isinstance(tree.get(head), dict) and rest in tree[head]:
            return tree[head][rest]
        for value in tree.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def best_test_accuracy(study_dir: Path) -> float | None:
    """The best config's test accuracy: the study's test.json, else its best trial's own test evaluation."""
    if (study_dir / "test.json").is_file():
        found = _find(json.loads((study_dir / "test.json").read_text()), "accuracy")
        if found is not None:
            return float(found)
    best = yaml.safe_load((study_dir / "best.yaml").read_text()) if (study_dir / "best.yaml").is_file() else {}
    number = _find(best, "number")
    metrics = study_dir / "trials" / f"trial-{number}" / "eval" / "metrics.json"
    if number is not None and metrics.is_file():
        test = json.loads(metrics.read_text()).get("test") or {}
        return test.get("accuracy")
    return None


def chosen(study_dir: Path, key: str):
    best = yaml.safe_load((study_dir / "best.yaml").read_text()) if (study_dir / "best.yaml").is_file() else {}
    return _find(best, key)


def run_defaults(args, out: Path) -> dict:
    """The quickstart's own settings at the same budget (its seed: the same run every repeat, so trained once)."""
    run = out / "defaults"
    metrics = run / "eval" / "metrics.json"
    if args.redo or not metrics.is_file():
        print("quickstart defaults ...", file=sys.stderr, flush=True)
        _tuneforge("train", str(CONFIG), f"output.dir={run}", "output.overwrite=true", *budget(args))
    r = yaml.safe_load(CONFIG.read_text())["method"]["r"]
    return {"test_accuracy": (json.loads(metrics.read_text()).get("test") or {}).get("accuracy"), "r": r}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(searches: list[dict], defaults: dict, trials: int) -> str:
    points = sorted({k for s in searches for k in s["best_after"]})
    head = ["search"] + [f"best val acc @{k}" for k in points] + ["test acc of best", "chosen r"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sampler in SAMPLERS:
        mine = [s for s in searches if s["sampler"] == sampler]
        if not mine:
            continue
        cells = [f"{sampler} ({trials} trials, {len(mine)} repeats)"]
        cells += [_mean_std([s["best_after"][k] for s in mine if k in s["best_after"]]) for k in points]
        cells.append(_mean_std([s["test_accuracy"] for s in mine if s["test_accuracy"] is not None]))
        cells.append(", ".join(str(s["r"]) for s in mine))
        lines.append("| " + " | ".join(cells) + " |")
    acc = defaults.get("test_accuracy")
    lines.append(
        "| "
        + " | ".join(
            ["quickstart defaults (same budget)"]
            + ["-"] * len(points)
            + [f"{acc:.4f}" if acc is not None else "-", str(defaults.get("r"))]
        )
        + " |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="trials per search (default 20)")
    ap.add_argument("--repeats", type=int, default=3, help="searches per sampler, seeded 0..N-1 (default 3)")
    ap.add_argument(
        "--max-train",
        type=int,
        default=2000,
        help="training rows per trial (data.max_train_samples; 0: all; default 2000)",
    )
    ap.add_argument(
        "--max-steps",
        type=int,
        default=60,
        help="optimizer steps per trial (train.max_steps; 0: the config's epochs; default 60)",
    )
    ap.add_argument(
        "--validation",
        type=float,
        default=None,
        help="fraction held out for validation (data.split.validation; default the config's)",
    )
    ap.add_argument("--samplers", nargs="*", default=list(SAMPLERS), choices=SAMPLERS)
    ap.add_argument("--out", default=str(REPO / "runs" / "bench-search"))
    ap.add_argument("--redo", action="store_true", help="run again what OUT already holds")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    searches = [run_search(s, r, args, out) for r in range(args.repeats) for s in args.samplers]
    defaults = run_defaults(args, out)
    summary = {
        "trials": args.trials,
        "repeats": args.repeats,
        "budget": budget(args),
        "searches": searches,
        "defaults": defaults,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table(searches, defaults, args.trials))


if __name__ == "__main__":
    main()
