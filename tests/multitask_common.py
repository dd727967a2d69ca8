"""Small learnable multi-task data for the tiny BERT of conftest: `subjectivity` (objective rows hold only filler
words, subjective rows a sentiment too) on every row, `polarity` only on subjective rows, and an optional
multi-label `tags` sub-task (which of two word groups the text has)."""

from __future__ import annotations

import random

from conftest import FILLER, NEG, POS


def multitask_rows(n: int, seed: int = 0, tags: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 3  # 0: objective, 1: negative review, 2: positive review
        words = rng.sample(FILLER, 5)
        if kind:
            words += rng.sample(POS if kind == 2 else NEG, 2)
        rng.shuffle(words)
        row = {
            "text": " ".join(words),
            "subjectivity": "objective" if kind == 0 else "subjective",
            "polarity": None if kind == 0 else ("positive" if kind == 2 else "negative"),
        }
        if tags:
            have = [t for t, group in (("plot", {"plot", "story"}), ("cast", {"acting", "film"})) if group & set(words)]
            row["tags"] = "|".join(have)
        rows.append(row)
    return rows


def multitask_config(model: str, data: str, out: str, method: str = "lora", **task) -> dict:
    return {
        "model": {"name": model},
        "data": {"train": data, "max_length": 32},
        "task": {"type": "multitask", "tasks": {"subjectivity": {}, "polarity": {}}, **task},
        "method": {"name": method},
        "train": {
            "epochs": 4,
            "batch_size": 16,
            "learning_rate": 1e-2 if method == "lora" else 5e-3,
            "logging_steps": 2,
            "report_to": "none",
            "seed": 7,
        },
        "output": {"dir": out},
    }
