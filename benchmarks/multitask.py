"""One multi-task model against two single-task models, on the whole rotten tomatoes corpus
(builtin:rotten-tomatoes-full): `subjectivity` (plot summary vs review, every row) and `polarity` (fresh vs
rotten, reviews only), with the same base model, method, data files and epochs; each figure a mean over seeds
with its spread.

Every run reads the same fixed train/validation/test files (cut once from the corpus with seed 0, stratified by
both labels), so all models are scored on the same test rows. Targets: each sub-task of the multi-task run within
1 accuracy point of its single-task run; and what one backbone saves: parameters, model directory size and CPU
time to answer both questions for the test texts (one forward pass instead of two).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/multitask.py [--seeds 42 43 44] [--method lora]
        [--epochs 1] [--max-train 5000] [--max-length 64] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
SUBTASKS = ("subjectivity", "polarity")


def _stats(values: list[float], digits: int = 4) -> str:
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"


def make_splits(work: Path, max_train: int | None) -> dict[str, str]:
    """Fixed train/validation/test csv files from the corpus (seed 0, stratified by subjectivity x polarity)."""
    from sklearn.model_selection import train_test_split

    from tuneforge.data.sources import read_table

    df = read_table("builtin:rotten-tomatoes-full")[["text", "subjectivity", "polarity"]]
    df = df[df["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]  # the corpus has a few empty rows
    key = df["subjectivity"] + "/" + df["polarity"].fillna("-")
    rest, test = train_test_split(df, test_size=1500, random_state=0, stratify=key)
    train, val = train_test_split(rest, test_size=800, random_state=0, stratify=key.loc[rest.index])
    if max_train and max_train < len(train):
        train, _ = train_test_split(train, train_size=max_train, random_state=0, stratify=key.loc[train.index])
    paths = {}
    for name, part in (("train", train), ("validation", val), ("test", test)):
        paths[name] = str(work / f"{name}.csv")
        part.to_csv(paths[name], index=False)
    print(
        f"data: train {len(train)}, validation {len(val)}, test {len(test)} rows "
        f"(plots in test: {(test['subjectivity'] == 'objective').sum()})",
        file=sys.stderr,
        flush=True,
    )
    return paths


def _train(raw: dict) -> Path:
    import tuneforge
    from tuneforge.config import load_config

    return tuneforge.train(load_config(raw=raw)).run_dir


def configs(files: dict, seed: int, method: str, epochs: float, max_length: int, work: Path) -> dict[str, dict]:
    import yaml

    multi = yaml.safe_load((REPO / "configs/multitask/subjectivity-polarity.yaml").read_text())
    multi["method"] = {"name": method} if method != "lora" else multi["method"]
    multi["data"].update(files, max_length=max_length)
    multi["train"].update(epochs=epochs, seed=seed, report_to="none")
    multi["output"] = {"dir": str(work / f"multi-{seed}"), "overwrite": True}
    out = {"multi": multi}
    for sub in SUBTASKS:
        single = json.loads(json.dumps(multi))
        single["task"] = {"type": "classification"}
        single["data"]["label_column"] = sub
        single["eval"] = {"metric": "accuracy"}
        single["output"] = {"dir": str(work / f"{sub}-{seed}"), "overwrite": True}
        out[sub] = single
    return out


def inference_seconds(run_dirs: list[Path], texts: list[str], repeats: int = 3) -> float:
    """Median seconds to answer every text with each of `run_dirs` (one model after the other)."""
    from tuneforge.inference import load_run, predict

    runs = [load_run(str(d), device="cpu") for d in run_dirs]
    for r in runs:
        predict(r, texts[:64])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for r in runs:
            predict(r, texts, batch_size=64)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--method", default="lora")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-train", type=int, default=5000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    import pandas as pd

    work = Path(args.work or tempfile.mkdtemp(prefix="tf-multitask-"))
    work.mkdir(parents=True, exist_ok=True)
    files = make_splits(work, args.max_train)
    texts = pd.read_csv(files["test"])["text"].astype(str).tolist()
    acc: dict[str, dict[str, list]] = {s: {"multi": [], "single": []} for s in SUBTASKS}
    cost: dict[str, list] = {
        "params_multi": [],
        "params_single": [],
        "mb_multi": [],
        "mb_single": [],
        "s_multi": [],
        "s_single": [],
        "train_s_multi": [],
        "train_s_single": [],
    }
    for seed in args.seeds:
        runs = {
            name: _train(raw)
            for name, raw in configs(files, seed, args.method, args.epochs, args.max_length, work).items()
        }
        multi = json.loads((runs["multi"] / "eval" / "metrics.json").read_text())["test"]
        eff = {n: json.loads((d / "efficiency.json").read_text()) for n, d in runs.items()}
        for sub in SUBTASKS:
            acc[sub]["multi"].append(multi[f"{sub}_accuracy"])
            acc[sub]["single"].append(json.loads((runs[sub] / "eval" / "metrics.json").read_text())["test"]["accuracy"])
        cost["params_multi"].append(eff["multi"]["total_params"])
        cost["params_single"].append(sum(eff[s]["total_params"] for s in SUBTASKS))
        cost["mb_multi"].append(dir_mb(runs["multi"] / "model"))
        cost["mb_single"].append(sum(dir_mb(runs[s] / "model") for s in SUBTASKS))
        cost["train_s_multi"].append(eff["multi"]["train_seconds"])
        cost["train_s_single"].append(sum(eff[s]["train_seconds"] for s in SUBTASKS))
        cost["s_multi"].append(inference_seconds([runs["multi"]], texts))
        cost["s_single"].append(inference_seconds([runs[s] for s in SUBTASKS], texts))
        print(
            f"seed {seed}: "
            + ", ".join(f"{s} multi {acc[s]['multi'][-1]:.4f} single {acc[s]['single'][-1]:.4f}" for s in SUBTASKS),
            file=sys.stderr,
            flush=True,
        )

    n = len(args.seeds)
    print(
        f"\nMulti-task vs two single-task runs: builtin:minilm-l6, method {args.method}, {args.epochs:g} epoch(s), "
        f"max_length {args.max_length}, the same {args.max_train} training rows, {n} seeds (mean ± std)\n"
    )
    print("| sub-task | multi-task accuracy | single-task accuracy | difference (points) | within 1 point |")
    print("|---|---|---|---|---|")
    for sub in SUBTASKS:
        diffs = [100 * (m - s) for m, s in zip(acc[sub]["multi"], acc[sub]["single"])]
        ok = statistics.fmean(diffs) >= -1.0
        print(
            f"| {sub} | {_stats(acc[sub]['multi'])} | {_stats(acc[sub]['single'])} | {_stats(diffs, 2)} | "
            f"{'yes' if ok else 'no'} |"
        )
    m = {k: statistics.fmean(v) for k, v in cost.items()}
    print("\n| serving both labels | multi-task (one model) | two single-task models | ratio |")
    print("|---|---|---|---|")
    print(
        f"| parameters | {m['params_multi'] / 1e6:.2f} M | {m['params_single'] / 1e6:.2f} M | "
        f"{m['params_multi'] / m['params_single']:.2f}x |"
    )
    print(
        f"| model directories | {m['mb_multi']:.1f} MB | {m['mb_single']:.1f} MB | "
        f"{m['mb_multi'] / m['mb_single']:.2f}x |"
    )
    print(
        f"| CPU time, {len(texts)} test texts (median of 3) | {_stats(cost['s_multi'], 2)} s | "
        f"{_stats(cost['s_single'], 2)} s | {m['s_multi'] / m['s_single']:.2f}x |"
    )
    print(
        f"| training time | {_stats(cost['train_s_multi'], 1)} s | {_stats(cost['train_s_single'], 1)} s | "
        f"{m['train_s_multi'] / m['train_s_single']:.2f}x |"
    )
    (work / "results.json").write_text(json.dumps({"args": vars(args), "accuracy": acc, "cost": cost}, indent=2))
    print(f"\nruns and results.json in {work}")


if __name__ == "__main__":
    main()
