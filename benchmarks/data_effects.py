"""Measured effects of data preparation on all-MiniLM-L6-v2 + LoRA (the quickstart config), rotten tomatoes.

    low-resource: 100 stratified training examples x 10 seeds: no augmentation, EDA x3 (10 seeds), EDA x11 at
                  rates 0.05 (5 seeds), each EDA arm with the defaults (two most frequent WordNet senses, negations
                  protected) and as "-v1" with every WordNet sense and unprotected negations (the EDA paper's
                  dictionary); gains are paired per seed (the same 100 rows), with their standard error
    noise:        10% of 2,000 training labels flipped: clean vs noisy vs noisy + data.clean.label_noise=drop
                  (TF-IDF and model-embedding detectors at the default threshold 0.5, 2 training seeds; the model
                  detector and the averaged `both` detector at noise_threshold 0.7, and the fine-tuned detector
                  (noise_features=finetune) at 0.8, 5 training seeds); precision/recall of the dropped rows per run
    imbalance:    negatives subsampled to 10% of positives: unweighted vs class-weighted vs oversampled

All runs test on the same fixed 1,000 rows. Results are appended to benchmarks/results/data_effects.json as
each run finishes, and a run already there with the same overrides is reused (`--redo` trains it again).
Usage: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/data_effects.py [lowres noise imbalance] [--redo]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/quickstart/sentiment-minilm-lora.yaml"
RESULTS = ROOT / "benchmarks/results/data_effects.json"
WORK = Path(tempfile.gettempdir()) / "tuneforge-data-effects"
FT_THRESHOLD = 0.8
COMMON = ["train.report_to=none", "output.overwrite=true", "data.max_length=64", "train.logging_steps=50"]


def _files():
    from tuneforge.data.sources import read_table

    WORK.mkdir(parents=True, exist_ok=True)
    df = (
        read_table("builtin:rotten-tomatoes")[["text", "label"]].sample(frac=1.0, random_state=0).reset_index(drop=True)
    )
    test, val, pool = df.iloc[:1000], df.iloc[1000:1500], df.iloc[1500:].reset_index(drop=True)
    test.to_json(WORK / "test.jsonl", orient="records", lines=True)
    val.to_json(WORK / "val.jsonl", orient="records", lines=True)
    pool.to_json(WORK / "pool.jsonl", orient="records", lines=True)
    return pool


def _run(name: str, overrides: list[str]) -> dict:
    import tuneforge
    from tuneforge.config import load_config

    done = next((r for r in _results() if r.get("name") == name and r.get("overrides") == overrides), None)
    if done is not None and "--redo" not in sys.argv:  # runs are seeded: a finished one is reused
        print(json.dumps({**done, "reused": True}), flush=True)
        return done

    cfg = load_config(
        CONFIG, [*COMMON, f"data.test={WORK / 'test.jsonl'}", f"output.dir={WORK / 'runs' / name}", *overrides]
    )
    t0 = time.time()
    res = tuneforge.train(cfg)
    test = res.metrics["test"]
    report = json.loads((res.run_dir / "data" / "report.json").read_text())
    out = {
        "name": name,
        "accuracy": round(test["accuracy"], 4),
        "f1_macro": round(test["f1_macro"], 4),
        "train_rows": report["after"]["rows"],
        "seconds": round(time.time() - t0, 1),
        "overrides": overrides,
    }
    print(json.dumps(out), flush=True)
    _save(out)
    return out


def _results() -> list[dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else []


def _save(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = _results()
    rows = [r for r in rows if r["name"] != row["name"]] + [row]
    RESULTS.write_text(json.dumps(rows, indent=1))


def lowres(seeds=tuple(range(10))):
    # equal compute: 100 rows x 12 epochs vs (100 + 300 augmented) x 3 epochs
    base = [
        f"data.train={WORK / 'pool.jsonl'}",
        "data.max_train_samples=100",
        "data.split.validation=0",
        "train.eval_strategy='no'",
        "eval.load_best_model=false",
        "train.batch_size=16",
    ]
    # eda: 3 copies at the default rates (0.1); eda-many: the EDA paper's small-data setting (more copies, rates
    # 0.05), 11 copies x 1 epoch: about as many optimizer steps (~68 after deduplication) as plain (7 x 12 = 84)
    many = [
        "train.epochs=1",
        "data.augment.enabled=true",
        "data.augment.num_per_example=11",
        *(f"data.augment.{op}_rate=0.05" for op in ("synonym", "insert", "swap", "delete")),
    ]
    eda = ["train.epochs=3", "data.augment.enabled=true", "data.augment.num_per_example=3"]
    v1 = ["data.augment.synonym_senses=0", "data.augment.protect_negations=false"]
    arms = {"eda": eda, "eda-many": many, "eda-v1": eda + v1, "eda-many-v1": many + v1}
    five_seeds = {"eda-many", "eda-many-v1"}  # below plain on 5 seeds: not repeated further
    acc = {"plain": [], **{k: [] for k in arms}}
    for i, s in enumerate(seeds):
        seed = [f"data.split.seed={s}", f"train.seed={s}"]
        acc["plain"].append(_run(f"lowres-plain-{s}", base + seed + ["train.epochs=12"])["accuracy"])
        for k, extra in arms.items():
            if k not in five_seeds or i < 5:
                acc[k].append(_run(f"lowres-{k}-{s}", base + seed + extra)["accuracy"])
        summary = {
            k: {
                "mean": round(statistics.mean(v), 4),
                "stdev": round(statistics.stdev(v), 4) if len(v) > 1 else 0,
                "runs": v,
            }
            for k, v in acc.items()
        }
        summary["name"] = "lowres-summary"
        summary["seeds"] = list(seeds[: i + 1])
        for k in arms:
            # paired: each arm against plain on the seeds (the same 100 rows) it ran
            diff = [a - b for a, b in zip(acc[k], acc["plain"])]
            summary[f"gain_points_{k}"] = round(100 * statistics.mean(diff), 2)
            if len(diff) > 1:
                summary[f"gain_stderr_points_{k}"] = round(100 * statistics.stdev(diff) / len(diff) ** 0.5, 2)
        _save(summary)
        print(json.dumps(summary), flush=True)


def _detector_scores(res, flip) -> dict:
    found = np.zeros(len(flip), dtype=bool)
    found[[s["index"] for s in res.suspects if s["confidence"] >= 0.5]] = True
    return {
        "flipped": int(flip.sum()),
        "flagged": int(found.sum()),
        "precision": round(float((found & flip).sum() / max(found.sum(), 1)), 4),
        "recall": round(float((found & flip).sum() / flip.sum()), 4),
        "oof_accuracy": round(res.oof_accuracy, 4),
    }


def _acted_scores(name: str, flipped: set[str]) -> dict | None:
    """Precision and recall of the rows a drop run acted on, against the flipped texts (from the run's
    data/label_suspects.jsonl; None for runs made before that file existed)."""
    path = WORK / "runs" / name / "data" / "label_suspects.jsonl"
    if not path.exists():
        return None
    acted = [s["text"] for s in map(json.loads, path.read_text().splitlines()) if s["acted"]]
    hit = sum(t in flipped for t in acted)
    return {
        "acted": len(acted),
        "precision": round(hit / max(len(acted), 1), 4),
        "recall": round(hit / len(flipped), 4),
    }


def noise(n=2000, seeds=(0, 1, 2, 3, 4)):
    """Labels flipped once (data seed 0); training repeated over `seeds`. Detectors: TF-IDF, the frozen MiniLM
    embeddings (data.clean.noise_features=model) and their average (both). The two arms at threshold 0.5 drop
    ~24% of the rows and lost accuracy on both of the first 2 seeds, so they are not repeated further."""
    from functools import partial

    from tuneforge.data.noise import find_label_errors
    from tuneforge.models.embed import embed_texts
    from tuneforge.models.loader import resolve_model

    pool = _files()
    train = pool.iloc[:n].copy()
    rng = np.random.default_rng(0)
    flip = rng.random(n) < 0.10
    noisy = train.copy()
    noisy.loc[flip, "label"] = noisy.loc[flip, "label"].map({"positive": "negative", "negative": "positive"})
    train.to_json(WORK / "train_clean.jsonl", orient="records", lines=True)
    noisy.to_json(WORK / "train_noisy.jsonl", orient="records", lines=True)
    texts, labels = noisy["text"].tolist(), noisy["label"].tolist()
    embed = partial(embed_texts, resolve_model("builtin:minilm-l6"), max_length=64)
    for name, kw in (("tfidf", {}), ("model", {"embed": embed}), ("both", {"embed": embed, "with_tfidf": True})):
        det = {
            "name": f"noise-detector-{name}",
            **_detector_scores(find_label_errors(texts, labels, seed=42, **kw), flip),
        }
        print(json.dumps(det), flush=True)
        _save(det)
    base = [f"data.validation={WORK / 'val.jsonl'}", "train.epochs=2"]
    drop = [f"data.train={WORK / 'train_noisy.jsonl'}", "data.clean.label_noise=drop"]
    conditions = {
        "clean": [f"data.train={WORK / 'train_clean.jsonl'}", "data.clean.label_noise=none"],
        "noisy": [f"data.train={WORK / 'train_noisy.jsonl'}", "data.clean.label_noise=none"],
        "drop-tfidf": drop,
        "drop-model": drop + ["data.clean.noise_features=model"],
        # fewer, surer suspects: 148 rows at precision 0.48 instead of 486 at 0.28 (measured with fold seed 42)
        "drop-model-t0.7": drop + ["data.clean.noise_features=model", "data.clean.noise_threshold=0.7"],
        "drop-both-t0.7": drop + ["data.clean.noise_features=both", "data.clean.noise_threshold=0.7"],
        # the run's own model fine-tuned on 4 of 5 folds, 5 times; threshold: on a held-out slice (pool rows
        # 4000-6000, flip seed 1) the lowest whose precision was above 0.5 (0.57, at recall 0.32)
        f"drop-finetune-t{FT_THRESHOLD}": drop
        + ["data.clean.noise_features=finetune", f"data.clean.noise_threshold={FT_THRESHOLD}"],
    }
    two_seeds = {"drop-tfidf", "drop-model"}
    flipped = set(noisy["text"][flip])
    acc = {k: [] for k in conditions}
    acted = {k: [] for k in conditions if k.startswith("drop-")}
    for i, s in enumerate(seeds):
        for k, extra in conditions.items():
            if k in two_seeds and i >= 2:
                continue
            acc[k].append(_run(f"noise-{k}-{s}", base + extra + [f"train.seed={s}"])["accuracy"])
            if k in acted:
                acted[k].append(_acted_scores(f"noise-{k}-{s}", flipped))
        # the summary so far, after every seed: a stopped benchmark still leaves its complete seeds summarised
        mean = {k: statistics.mean(v) for k, v in acc.items()}
        lost = mean["clean"] - mean["noisy"]
        summary = {
            "name": "noise-summary",
            "seeds": list(seeds[: i + 1]),
            "accuracy": acc,
            "mean": {k: round(v, 4) for k, v in mean.items()},
            "lost_points": round(100 * lost, 2),
            "acted": acted,
        }
        for k in acted:
            # paired over the seeds this arm ran (the first two only for the two_seeds arms)
            m = len(acc[k])
            noisy_k = statistics.mean(acc["noisy"][:m])
            lost_k = statistics.mean(acc["clean"][:m]) - noisy_k
            summary[f"recovered_points_{k}"] = round(100 * (mean[k] - noisy_k), 2)
            summary[f"recovered_share_{k}"] = round((mean[k] - noisy_k) / lost_k, 3) if lost_k > 0 else None
        _save(summary)
        print(json.dumps(summary), flush=True)


def imbalance(n=2500):
    pool = _files()
    train = pool.iloc[:n]
    pos, neg = train[train.label == "positive"], train[train.label == "negative"]
    neg = neg.sample(n=max(1, len(pos) // 10), random_state=0)
    import pandas as pd

    pd.concat([pos, neg]).sample(frac=1.0, random_state=0).to_json(
        WORK / "train_imb.jsonl", orient="records", lines=True
    )
    base = [
        f"data.train={WORK / 'train_imb.jsonl'}",
        f"data.validation={WORK / 'val.jsonl'}",
        "train.epochs=2",
        "eval.metric=f1_macro",
    ]
    rows = [
        _run("imb-none", base),
        _run("imb-weighted", base + ["data.balance.class_weights=balanced"]),
        _run("imb-oversample", base + ["data.balance.sampling=oversample"]),
    ]
    summary = {
        "name": "imbalance-summary",
        **{r["name"]: {"f1_macro": r["f1_macro"], "accuracy": r["accuracy"]} for r in rows},
    }
    _save(summary)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    todo = [a for a in sys.argv[1:] if not a.startswith("--")] or ["lowres", "noise", "imbalance"]
    _files()
    for what in todo:
        globals()[what]()
