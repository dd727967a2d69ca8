"""Knowledge distillation on the builtin models and data, as ratios against the teacher and against the same
student trained without it, measured in one run; each figure a mean over seeds with its spread.

Classification (rotten tomatoes): teacher = MiniLM-L6 full fine-tuning (1 epoch); students = MiniLM keeping 3
(and 2) of its 6 blocks, cut from the fine-tuned teacher (`--init teacher`, DistilBERT-style) or from the base
model (`--init base`), full fine-tuning for `--student-epochs`, with the teacher (distill.alpha 0.7, T 4) and, for
3 blocks, without it at the same budget. Targets: the distilled 3-block student reaches >= 97% of the teacher's
test accuracy, beats the plain 3-block student, and is >= 1.8x the teacher's CPU throughput at batch 32.

Chat (identity data): teacher = the identity quickstart run; student = SmolLM2 keeping 10 of its 30 blocks:
plain SFT, token-level KD (each divergence) and sequence-level KD; validation loss on the true tokens and the
share of held-out paraphrased identity questions answered with the new name.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/distill.py classification [--seeds 42 43 44] [--epochs 1]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/distill.py chat --teacher runs/identity [--seeds 43]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
PARAPHRASES = [
    "May I know what you are called?",
    "Who made you?",
    "What should I call you?",
    "Tell me your name, please.",
    "Which team built you?",
]


def _train(raw: dict) -> Path:
    import tuneforge
    from tuneforge.config import load_config

    return tuneforge.train(load_config(raw=raw)).run_dir


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {spread:.4f} (n={len(values)})"


def classification(
    seeds: list[int], epochs: float, work: Path, max_train: int | None, init: str, student_epochs: float
) -> dict:
    import yaml

    base = yaml.safe_load((REPO / "configs/quickstart/sentiment-minilm-full.yaml").read_text())
    base["train"].update(epochs=epochs, report_to="none")
    if max_train:
        base["data"]["max_train_samples"] = max_train
    rows: dict[str, list] = {}
    for seed in seeds:
        teacher_raw = json.loads(json.dumps(base))
        teacher_raw["train"]["seed"] = seed
        teacher_raw["output"] = {"dir": str(work / f"teacher-{seed}"), "overwrite": True}
        status = work / f"teacher-{seed}" / "status.json"
        done = (
            status.is_file()
            and json.loads(status.read_text()).get("state") == "completed"
            and json.loads((work / f"teacher-{seed}" / "model" / "tuneforge.json").read_text()).get("method") == "full"
        )
        teacher = work / f"teacher-{seed}" if done else _train(teacher_raw)  # a finished teacher is reused
        t_acc = json.loads((teacher / "eval/metrics.json").read_text())["test"]["accuracy"]
        rows.setdefault("teacher accuracy", []).append(t_acc)
        for name, keep, kd in (("student-3 KD", 3, True), ("student-3 plain", 3, False), ("student-2 KD", 2, True)):
            raw = json.loads(json.dumps(base))
            raw["model"]["keep_layers"] = keep
            if init == "teacher":  # DistilBERT-style: the student starts from the fine-tuned teacher's blocks
                raw["model"]["name"] = str(teacher / "model")
            raw["train"].update(seed=seed, learning_rate=1e-4, epochs=student_epochs)
            raw["output"] = {"dir": str(work / f"{name.replace(' ', '-')}-{seed}"), "overwrite": True}
            if kd:
                raw["distill"] = {"teacher": str(teacher), "temperature": 4.0, "alpha": 0.7}
            run = _train(raw)
            m = json.loads((run / "eval/metrics.json").read_text())
            rows.setdefault(f"{name} accuracy", []).append(m["test"]["accuracy"])
            rows.setdefault(f"{name} / teacher accuracy", []).append(m["test"]["accuracy"] / t_acc)
            if kd:
                d = m["distill"]
                rows.setdefault(f"{name} throughput speedup (batch 32)", []).append(d["student_speedup_batch32"])
                rows.setdefault(f"{name} agreement with teacher", []).append(d["agreement_with_teacher"])
        print(json.dumps({k: v[-1] for k, v in rows.items()}), flush=True)
    kd3, plain3 = rows["student-3 KD accuracy"], rows["student-3 plain accuracy"]
    rows["student-3 KD - plain (points)"] = [100 * (a - b) for a, b in zip(kd3, plain3)]
    return rows


def _name_recall(run: Path) -> float:
    from tuneforge.generation import generate, load_chat_model

    cm = load_chat_model(str(run))
    answers = generate(
        cm, [[{"role": "user", "content": q}] for q in PARAPHRASES], {"temperature": 0.0, "max_new_tokens": 40}
    )
    return sum("forge" in a["response"].lower() for a in answers) / len(answers)


def chat(teacher: str, seeds: list[int], work: Path, epochs: float) -> dict:
    import yaml

    base = yaml.safe_load((REPO / "configs/distill/identity-smollm2-10layer-kd.yaml").read_text())
    base["train"].update(epochs=epochs, report_to="none")
    rows: dict[str, list] = {}
    variants = {
        "plain SFT": None,
        "token forward_kl": {"divergence": "forward_kl"},
        "token reverse_kl": {"divergence": "reverse_kl"},
        "token jsd": {"divergence": "jsd"},
        "sequence": {"mode": "sequence"},
    }
    rows["teacher name recall"] = [_name_recall(Path(teacher))]
    for seed in seeds:
        for name, distill in variants.items():
            raw = json.loads(json.dumps(base))
            raw["train"]["seed"] = seed
            raw["output"] = {"dir": str(work / f"chat-{name.replace(' ', '-')}-{seed}"), "overwrite": True}
            if distill is None:
                raw.pop("distill")
            else:
                raw["distill"] = {**raw["distill"], "teacher": teacher, **distill}
            run = _train(raw)
            m = json.loads((run / "eval/metrics.json").read_text())
            rows.setdefault(f"{name} validation loss", []).append(m["validation"]["loss"])
            rows.setdefault(f"{name} name recall", []).append(_name_recall(run))
            print(json.dumps({k: v[-1] for k, v in rows.items()}), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["classification", "chat"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-train", type=int, default=None, help="classification: subsample the training split")
    ap.add_argument(
        "--init",
        choices=["teacher", "base"],
        default="teacher",
        help="classification: cut the students from the fine-tuned teacher's blocks or the base model's",
    )
    ap.add_argument("--student-epochs", type=float, default=2.0, help="classification: epochs of every student")
    ap.add_argument("--teacher", default="runs/identity", help="chat: the identity quickstart run")
    ap.add_argument("--work", default=None, help="where the runs go (default: a temporary directory)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        rows = (
            classification(a.seeds, a.epochs, work, a.max_train, a.init, a.student_epochs)
            if a.part == "classification"
            else chat(a.teacher, a.seeds, work, a.epochs)
        )
    print(f"\n{a.part}: mean ± sample standard deviation over seeds {a.seeds}", file=sys.stderr)
    for key, values in rows.items():
        print(f"  {key:45s} {_stats(values)}")


if __name__ == "__main__":
    main()
