"""Image classification with little data: MobileNetV2 on Fashion-MNIST, 100 training images per class.

Arms (configs/vision/fashion-mnist-mobilenet.yaml's data and schedule, each x 3 seeds; a seed fixes the 1,000
training images, so arms are compared paired, seed by seed):
    scratch            method full, model.random_init=true: the same architecture from random weights
    full               method full from the ImageNet weights (builtin:mobilenet-v2)
    full+mix           full, with CutMix (alpha 1, p 0.5) and MixUp (alpha 0.2, p 0.5)
    head-only          method freeze, trainable_layers=0 (the new classifier alone)
    lora               method lora, r 16 on every convolution that is not depthwise (+ the new head)
Every arm tests on the same 1,000 images of the official Fashion-MNIST test set (100 per class) and validates on
1,000 images held out of the training set. Inputs are 64x64 (the 28x28 images upscaled), to keep the whole
benchmark at ~25 minutes on 2 CPU cores.

Printed: test accuracy per arm (mean +- standard deviation over seeds) and the paired gains in points
(fine-tuned - scratch, full+mix - full) with their spread. Results go to benchmarks/results/vision.json (a run
already there is reused unless --redo) and the table to benchmarks/results/vision.md.
Usage: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/vision.py [--seeds 0 1 2] [--epochs 8] [--redo]
Needs: the Debian package dataset-fashion-mnist and the builtin model package (make install).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/vision/fashion-mnist-mobilenet.yaml"
RESULTS = ROOT / "benchmarks/results/vision.json"
TABLE = ROOT / "benchmarks/results/vision.md"
WORK = Path(tempfile.gettempdir()) / "tuneforge-vision-bench"
NO_MIX = ["data.cutmix=null", "data.mixup=null"]
ARMS = {
    "scratch": ["model.random_init=true", "method.name=full", "train.learning_rate=0.002", *NO_MIX],
    "full": ["method.name=full", "train.learning_rate=0.001", *NO_MIX],
    "full+mix": [
        "method.name=full",
        "train.learning_rate=0.001",
        "data.cutmix.alpha=1.0",
        "data.cutmix.prob=0.5",
        "data.mixup.alpha=0.2",
        "data.mixup.prob=0.5",
    ],
    "head-only": ["method.name=freeze", "method.trainable_layers=0", "train.learning_rate=0.01", *NO_MIX],
    "lora": ["method.name=lora", "method.r=16", "train.learning_rate=0.002", *NO_MIX],
}


def _results() -> list[dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else []


def _save(row: dict) -> None:
    rows = [
        r
        for r in _results()
        if not (r["arm"] == row["arm"] and r["seed"] == row["seed"] and r["overrides"] == row["overrides"])
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows + [row], indent=1))


def run_arm(arm: str, seed: int, epochs: int, redo: bool) -> dict:
    import tuneforge
    from tuneforge.config import load_config

    overrides = [*ARMS[arm], f"train.epochs={epochs}", f"train.seed={seed}"]
    done = next((r for r in _results() if r["arm"] == arm and r["seed"] == seed and r["overrides"] == overrides), None)
    if done is not None and not redo:
        print(json.dumps({**done, "reused": True}), flush=True)
        return done
    cfg = load_config(
        CONFIG, [*overrides, "train.report_to=none", "output.overwrite=true", f"output.dir={WORK / f'{arm}-{seed}'}"]
    )
    t0 = time.time()
    res = tuneforge.train(cfg)
    test = res.metrics["test"]
    row = {
        "arm": arm,
        "seed": seed,
        "overrides": overrides,
        "test_accuracy": test["accuracy"],
        "test_f1_macro": test["f1_macro"],
        "test_images": test["n"],
        "trainable_params": res.efficiency.get("trainable_params"),
        "train_seconds": res.efficiency.get("train_seconds"),
        "wall_seconds": round(time.time() - t0, 1),
    }
    _save(row)
    print(json.dumps(row), flush=True)
    return row


def _spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {sd:.2f}"


def summarise(rows: list[dict], seeds: list[int]) -> str:
    acc = {a: {r["seed"]: 100 * r["test_accuracy"] for r in rows if r["arm"] == a and r["seed"] in seeds} for a in ARMS}
    params = {a: next((r["trainable_params"] for r in rows if r["arm"] == a), None) for a in ARMS}
    secs = {a: [r["train_seconds"] for r in rows if r["arm"] == a and r["seed"] in seeds] for a in ARMS}
    lines = [
        f"MobileNetV2 on Fashion-MNIST, 100 training images per class, 64x64 inputs, test accuracy (%) on 1,000 "
        f"test images, mean ± std over seeds {seeds}:",
        "",
        "| arm | test accuracy (%) | trainable parameters | train s (median) |",
        "|---|---|---|---|",
    ]
    for a in ARMS:
        if acc[a]:
            lines.append(
                f"| {a} | {_spread(list(acc[a].values()))} | {params[a]:,} | {statistics.median(secs[a]):.0f} |"
            )
    lines.append("")

    def paired(x: str, y: str) -> str | None:
        common = sorted(set(acc[x]) & set(acc[y]))
        if not common:
            return None
        return _spread([acc[x][s] - acc[y][s] for s in common]) + f" points (paired over {len(common)} seeds)"

    for x, y, what in (
        ("full", "scratch", "fine-tuned from ImageNet vs from scratch"),
        ("full+mix", "full", "CutMix+MixUp vs none (full fine-tuning)"),
        ("lora", "head-only", "LoRA vs head only"),
        ("full", "lora", "full vs LoRA"),
    ):
        gain = paired(x, y)
        if gain:
            lines.append(f"- {what}: {gain}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--redo", action="store_true", help="train runs again even if their results are saved")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:  # seed-major: a partial benchmark already has complete pairs
        for arm in args.arms:
            rows.append(run_arm(arm, seed, args.epochs, args.redo))
    table = summarise(rows, args.seeds)
    TABLE.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
