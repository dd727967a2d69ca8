"""tuneforge vs transformers' Trainer on CPU at its best setting: same model, data split, method, epochs, batch size
and seed, several seeds (a different split each).

Rows, each trained and timed on training alone (no evaluation during training):
  tuneforge (auto)      `train.precision: auto`: bf16 autocast on a CPU with bf16 units (AMX / AVX512-BF16)
  tuneforge (fp32)      forced fp32: what a CPU without bf16 units gets
  Trainer best          dynamic padding (DataCollatorWithPadding), `train_sampling_strategy="group_by_length"`,
                        `bf16=True` where the CPU has bf16 units: the peer at its best CPU setting
  Trainer best fp32     the same in fp32
  Trainer pad-128       the tutorial recipe: every example padded to 128 tokens, fp32
Prints median train samples/s (over seeds), mean test accuracy with its spread, and the ratios to the best peer.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/cpu_classification.py [--train-size 2000] [--epochs 1]
        [--method full|lora] [--seeds 42,43,44] [--rows auto,fp32,best,best-fp32,pad128]
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

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def split_files(train_size: int, test_size: int, seed: int, out: Path) -> dict:
    from sklearn.model_selection import train_test_split

    from tuneforge.data.sources import read_table

    df = read_table("builtin:rotten-tomatoes")[["text", "label"]]
    out.mkdir(parents=True, exist_ok=True)
    rest, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=df["label"])
    train, _ = train_test_split(rest, train_size=train_size, random_state=seed, stratify=rest["label"])
    paths = {}
    for name, part in (("train", train), ("test", test)):
        paths[name] = str(out / f"{name}.csv")
        part.to_csv(paths[name], index=False)
    return paths


def run_tuneforge(files: dict, args, out: Path, precision: str) -> dict:
    import tuneforge
    from tuneforge.config import load_config

    lr = args.lr or (5e-5 if args.method == "full" else 1e-3)
    cfg = load_config(
        raw={
            "model": {"name": "builtin:minilm-l6"},
            "data": {"train": files["train"], "test": files["test"], "max_length": 128, "split": {"validation": 0.0}},
            "method": {"name": args.method},
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": lr,
                "seed": args.seed,
                "eval_strategy": "no",
                "report_to": "none",
                "warmup_ratio": 0.0,
                "weight_decay": 0.0,
                "precision": precision,
            },
            "output": {"dir": str(out), "overwrite": True},
        }
    )
    res = tuneforge.train(cfg)
    return {
        "samples_per_s": res.efficiency["train_samples_per_second"],
        "accuracy": res.metrics["test"]["accuracy"],
        "train_s": res.efficiency["train_seconds"],
    }


def run_peer(files: dict, args, out: Path, recipe: str) -> dict:
    """transformers' Trainer as its users write it: `pad128` (the tutorial recipe) or `best`/`best-fp32` (dynamic
    padding, length-grouped batches, bf16 autocast where the CPU has bf16 units)."""
    import datasets
    import pandas as pd
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tuneforge.config.environment import cpu_bf16
    from tuneforge.models.loader import resolve_model

    path = resolve_model("builtin:minilm-l6")
    tok = AutoTokenizer.from_pretrained(path)
    labels = ["negative", "positive"]
    padded = recipe == "pad128"

    def encode(csv):
        df = pd.read_csv(csv)
        texts = df["text"].astype(str).tolist()
        enc = tok(texts, truncation=True, max_length=128, **({"padding": "max_length"} if padded else {}))
        return datasets.Dataset.from_dict({**enc, "labels": [labels.index(l) for l in df["label"]]})

    train, test = encode(files["train"]), encode(files["test"])
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=8,
                lora_alpha=16,
                lora_dropout=0.05,
                target_modules="all-linear",
                exclude_modules=["classifier"],
                modules_to_save=["classifier"],
            ),
        )
    lr = args.lr or (5e-5 if args.method == "full" else 1e-3)
    best = {} if padded else {"train_sampling_strategy": "group_by_length"}
    targs = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=args.epochs,
        learning_rate=lr,
        seed=args.seed,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        bf16=recipe == "best" and cpu_bf16(),
        warmup_steps=0,
        weight_decay=0.0,
        **best,
    )
    collator = None if padded else DataCollatorWithPadding(tok)
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator)
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    logits = trainer.predict(test).predictions
    acc = float((np.asarray(logits).argmax(-1) == np.asarray(test["labels"])).mean())
    return {"samples_per_s": len(train) * args.epochs / secs, "accuracy": acc, "train_s": secs}


ROWS = {
    "auto": "tuneforge (auto)",
    "fp32": "tuneforge (fp32)",
    "best": "Trainer best",
    "best-fp32": "Trainer best fp32",
    "pad128": "Trainer pad-128",
}


def run_row(row: str, files: dict, args, out: Path) -> dict:
    if row in ("auto", "fp32"):
        return run_tuneforge(files, args, out, row)
    return run_peer(files, args, out, row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=1281)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--method", choices=["full", "lora"], default="full")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seeds", default="42,43,44", help="one split and one run of each row per seed")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"which of {', '.join(ROWS)}")
    args = ap.parse_args()
    import torch

    from tuneforge.config.environment import cpu_bf16

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        sys.exit(f"error: --rows: unknown {', '.join(unknown)} (choose from {', '.join(ROWS)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {r: [] for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in seeds:
            args.seed = seed
            files = split_files(args.train_size, args.test_size, seed, tmp / f"data{seed}")
            for r in rows:
                res = run_row(r, files, args, tmp / f"{r}{seed}")
                results[r].append(res)
                print(f"seed {seed} {ROWS[r]}: {json.dumps({k: round(v, 4) for k, v in res.items()})}", flush=True)
    summary = {}
    for r, runs in results.items():
        accs = [x["accuracy"] for x in runs]
        summary[r] = {
            "samples_per_s": statistics.median(x["samples_per_s"] for x in runs),
            "accuracy_mean": statistics.fmean(accs),
            "accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        }
    print(
        f"\nCPU classification benchmark: builtin MiniLM-L6, rotten tomatoes, {args.method}, train {args.train_size} "
        f"rows x {args.epochs:g} epoch(s), batch {args.batch_size}, seeds {args.seeds}, torch threads "
        f"{torch.get_num_threads()}, CPU bf16 units: {'yes' if cpu_bf16() else 'no'}"
    )
    print(f"{'':<22}{'train samples/s (median)':>26}{'test accuracy (mean ± sd)':>28}")
    for r, v in summary.items():
        print(f"{ROWS[r]:<22}{v['samples_per_s']:>26.1f}{v['accuracy_mean']:>20.4f} ± {v['accuracy_sd']:.4f}")
    ratios = {}
    for ours in ("auto", "fp32"):
        for peer in ("best", "best-fp32", "pad128"):
            if ours in summary and peer in summary:
                ratios[f"{ours}/{peer}"] = summary[ours]["samples_per_s"] / summary[peer]["samples_per_s"]
    for k, v in ratios.items():
        print(f"speed ratio tuneforge {k.replace('/', ' / Trainer ')}: {v:.2f}x")
    if "auto/best" in ratios:
        print(f"target: tuneforge (auto) >= 1.3x Trainer best; measured {ratios['auto/best']:.2f}x")
    print(json.dumps({"ratios": {k: round(v, 3) for k, v in ratios.items()}, "rows": summary}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
