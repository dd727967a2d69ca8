"""tuneforge vs the plain tutorial recipe on CPU: same model, data split, method, epochs, batch size and seed.

The peer is what most tutorials show: transformers' Trainer on data tokenized with
`padding="max_length", max_length=128`. tuneforge pads each batch only to its longest example and groups
batches by length. Both train the same method (full fine-tuning by default) from the same files, and both
are timed on training alone (no evaluation during training). Prints train samples/s of each, the ratio and
the test accuracy of each.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/cpu_classification.py [--train-size 2000] [--epochs 1]
        [--method full|lora] [--repeats 1]
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
    rest, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=df["label"])
    train, _ = train_test_split(rest, train_size=train_size, random_state=seed, stratify=rest["label"])
    paths = {}
    for name, part in (("train", train), ("test", test)):
        paths[name] = str(out / f"{name}.csv")
        part.to_csv(paths[name], index=False)
    return paths


def run_tuneforge(files: dict, args, out: Path) -> dict:
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


def run_peer(files: dict, args, out: Path) -> dict:
    """The tutorial recipe, written as the tutorials write it."""
    import datasets
    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    from tuneforge.models.loader import resolve_model

    path = resolve_model("builtin:minilm-l6")
    tok = AutoTokenizer.from_pretrained(path)
    labels = ["negative", "positive"]

    def encode(csv):
        df = pd.read_csv(csv)
        enc = tok(df["text"].astype(str).tolist(), padding="max_length", truncation=True, max_length=128)
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
    targs = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=lr,
        seed=args.seed,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        warmup_steps=0,
        weight_decay=0.0,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train)
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    logits = trainer.predict(test).predictions
    acc = float((np.asarray(logits).argmax(-1) == np.asarray(test["labels"])).mean())
    return {"samples_per_s": len(train) * args.epochs / secs, "accuracy": acc, "train_s": secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=1281)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--method", choices=["full", "lora"], default="full")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=1, help="timing repeats; medians are reported")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = split_files(args.train_size, args.test_size, args.seed, tmp)
        rows = {"tuneforge": [], "peer": []}
        for r in range(args.repeats):
            rows["tuneforge"].append(run_tuneforge(files, args, tmp / f"tf{r}"))
            rows["peer"].append(run_peer(files, args, tmp / f"peer{r}"))
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in rows.items()}
    ratio = med["tuneforge"]["samples_per_s"] / med["peer"]["samples_per_s"]
    print(
        f"\nCPU classification benchmark: builtin MiniLM-L6, rotten tomatoes, {args.method}, train {args.train_size} "
        f"rows x {args.epochs:g} epoch(s), batch {args.batch_size}, seed {args.seed}, torch threads "
        f"{torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'':<28}{'train samples/s':>16}{'train s':>10}{'test accuracy':>15}")
    print(
        f"{'tuneforge (dynamic padding)':<28}{med['tuneforge']['samples_per_s']:>16.1f}"
        f"{med['tuneforge']['train_s']:>10.1f}"
        f"{med['tuneforge']['accuracy']:>15.4f}"
    )
    print(
        f"{'peer (pad to 128)':<28}{med['peer']['samples_per_s']:>16.1f}{med['peer']['train_s']:>10.1f}"
        f"{med['peer']['accuracy']:>15.4f}"
    )
    print(
        f"speed ratio tuneforge/peer: {ratio:.2f}x (target >= 3x); accuracy difference "
        f"{med['tuneforge']['accuracy'] - med['peer']['accuracy']:+.4f}"
    )
    print(json.dumps({"ratio": round(ratio, 3), **{k: {m: round(x, 4) for m, x in v.items()} for k, v in med.items()}}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
