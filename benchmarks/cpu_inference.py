"""Inference on CPU in fp32 and in bf16 autocast (`--precision`), against transformers' `pipeline` at its best CPU
setting, measured in one run: the numbers behind each task's `InferenceHooks.cpu_bf16` default.

classification   a MiniLM-L6 run trained for this benchmark (builtin:rotten-tomatoes, 2,000 rows, 1 epoch), then
                 its test split (1,281 texts): predict throughput (texts/s, batch 64), one-text latency (p50 over
                 50 calls, what a serve /v1/classify request of one text computes), and how many labels bf16
                 changes. Peer: `pipeline("text-classification")` on the same weights, batch 64, fp32 and bf16.
chat             SmolLM2-135M-Instruct (the base model, as `tuneforge chat builtin:...` loads it): greedy answers to
                 8 prompts in one batch, 64 new tokens at most: generated tokens/s, and how many answers bf16 leaves
                 identical (and the mean share of tokens equal up to the first difference). Peer:
                 `pipeline("text-generation")` in fp32 and bf16, same prompts and settings, batch 8.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/cpu_inference.py [--tasks classification,chat]
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for staying healthy.",
    "Explain what a neural network is in two sentences.",
    "Write a haiku about the sea.",
    "How many legs does a spider have?",
    "What is 17 times 3?",
    "Name a famous painting by Leonardo da Vinci.",
    "Why is the sky blue?",
]


def _median_latency(fn, n: int = 50) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def classification(tmp: Path) -> dict:
    import torch
    from transformers import pipeline

    sys.path.insert(0, str(Path(__file__).parent))
    from cpu_classification import split_files

    import tuneforge
    from tuneforge.config import load_config
    from tuneforge.inference import load_run, predict

    files = split_files(2000, 1281, 42, tmp / "data")
    cfg = load_config(
        raw={
            "model": {"name": "builtin:minilm-l6"},
            "data": {"train": files["train"], "test": files["test"], "split": {"validation": 0.0}},
            "train": {"epochs": 1, "eval_strategy": "no", "report_to": "none"},
            "output": {"dir": str(tmp / "run"), "overwrite": True},
        }
    )
    run_dir = tuneforge.train(cfg).run_dir
    import pandas as pd

    texts = pd.read_csv(files["test"])["text"].astype(str).tolist()
    rows, labels = {}, {}
    for precision in ("fp32", "bf16"):
        run = load_run(run_dir, precision=precision)
        predict(run, texts[:64])  # warm-up
        t = time.perf_counter()
        out = predict(run, texts, batch_size=64)
        secs = time.perf_counter() - t
        labels[precision] = [r["label"] for r in out]
        one = _median_latency(lambda run=run: predict(run, texts[:1]))
        rows[f"tuneforge {precision}"] = {"texts_per_s": len(texts) / secs, "p50_one_text_ms": one * 1000}
    for name, dtype in (("pipeline fp32", torch.float32), ("pipeline bf16", torch.bfloat16)):
        pipe = pipeline("text-classification", model=str(Path(run_dir) / "model"), dtype=dtype, device="cpu")
        pipe(texts[:64], batch_size=64)
        t = time.perf_counter()
        pipe(texts, batch_size=64, truncation=True)
        secs = time.perf_counter() - t
        one = _median_latency(lambda pipe=pipe: pipe(texts[:1]))
        rows[name] = {"texts_per_s": len(texts) / secs, "p50_one_text_ms": one * 1000}
    changed = sum(a != b for a, b in zip(labels["fp32"], labels["bf16"], strict=True))
    return {"rows": rows, "texts": len(texts), "labels_changed_by_bf16": changed}


def chat() -> dict:
    import torch
    from transformers import pipeline

    from tuneforge.generation import generate, load_chat_model
    from tuneforge.models.loader import resolve_model

    settings = {"temperature": 0.0, "max_new_tokens": 64}
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    rows, answers = {}, {}
    for precision in ("fp32", "bf16"):
        os.environ["TUNEFORGE_PRECISION"] = precision
        cm = load_chat_model("builtin:smollm2-135m-instruct", device="cpu")
        generate(cm, chats[:2], {**settings, "max_new_tokens": 4})  # warm-up
        t = time.perf_counter()
        out = generate(cm, chats, settings, batch_size=8)
        secs = time.perf_counter() - t
        rows[f"tuneforge {precision}"] = {"tokens_per_s": sum(o["tokens"] for o in out) / secs}
        answers[precision] = [cm.tokenizer(o["response"], add_special_tokens=False)["input_ids"] for o in out]
    os.environ.pop("TUNEFORGE_PRECISION", None)
    path = resolve_model("builtin:smollm2-135m-instruct")
    for name, dtype in (("pipeline fp32", torch.float32), ("pipeline bf16", torch.bfloat16)):
        pipe = pipeline("text-generation", model=path, dtype=dtype, device="cpu")
        pipe.tokenizer.padding_side = "left"  # batched generation
        pipe(chats[:2], max_new_tokens=4, do_sample=False, batch_size=8)
        t = time.perf_counter()
        outs = pipe(chats, max_new_tokens=64, do_sample=False, batch_size=8)
        secs = time.perf_counter() - t
        texts = [o[0]["generated_text"][-1]["content"] for o in outs]
        tokens = sum(len(pipe.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in texts)
        rows[name] = {"tokens_per_s": tokens / secs}
    same, shares = 0, []
    for a, b in zip(answers["fp32"], answers["bf16"], strict=True):
        same += a == b
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        shares.append(k / max(len(a), 1))
    return {
        "rows": rows,
        "prompts": len(PROMPTS),
        "identical_answers": same,
        "mean_equal_prefix": statistics.fmean(shares),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="classification,chat")
    args = ap.parse_args()
    import torch

    from tuneforge.config.environment import cpu_bf16

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            results[task] = classification(Path(tmp)) if task == "classification" else chat()
            print(json.dumps({task: results[task]}), flush=True)
    print(f"\nCPU inference, torch threads {torch.get_num_threads()}, CPU bf16 units: {'yes' if cpu_bf16() else 'no'}")
    for task, res in results.items():
        unit = "texts_per_s" if task == "classification" else "tokens_per_s"
        print(f"\n{task}")
        for name, row in res["rows"].items():
            extra = f"{row['p50_one_text_ms']:>10.1f} ms p50 (one text)" if "p50_one_text_ms" in row else ""
            print(f"  {name:<16}{row[unit]:>10.1f} {unit.replace('_per_s', '/s')}{extra}")
        best_peer = max(res["rows"][k][unit] for k in res["rows"] if k.startswith("pipeline"))
        print(f"  tuneforge bf16 / best pipeline: {res['rows']['tuneforge bf16'][unit] / best_peer:.2f}x")
        own = res["rows"]["tuneforge bf16"][unit] / res["rows"]["tuneforge fp32"][unit]
        print(f"  tuneforge bf16 / tuneforge fp32: {own:.2f}x")
        if task == "classification":
            print(f"  labels bf16 changed: {res['labels_changed_by_bf16']} of {res['texts']}")
        else:
            print(
                f"  greedy answers identical in bf16: {res['identical_answers']} of {res['prompts']}; mean share of "
                f"tokens equal before the first difference {res['mean_equal_prefix']:.2f}"
            )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
