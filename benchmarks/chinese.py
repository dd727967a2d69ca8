"""Issue 37's measurements: SmolLM2's tokens per Chinese character before and after vocabulary expansion, and
SmolLM2-135M as a text classifier against the MiniLM quickstart.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/chinese.py --part tokens [--new-tokens 2000,4000,8000]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/chinese.py --part classifier [--seeds 1,2,3]
        [--train-rows 2000] [--out DIR] [--json PATH]

`--part tokens` (about a minute): trains new tokens on the Chinese corpus (builtin:zh-text-demo, the Chinese
Alpaca demo records as plain text) with SmolLM2's own tokenizer kind (byte-level BPE), adds them, and prints the
tokens per Chinese character of the held-out tenth of the corpus before and after, for each --new-tokens. The target
of issue 37 is at most 0.6x the tokens.

`--part classifier`: the shipped quickstart configs configs/quickstart/sentiment-minilm-lora.yaml (MiniLM-L6, 22.7M
parameters) and configs/quickstart/sentiment-smollm2-lora.yaml (SmolLM2-135M-Instruct, the class read at the last
real token), each `tuneforge train` in its own subprocess on the same training sample (`data.max_train_samples`,
one epoch: the same budget in examples), the same validation and test splits per seed. It prints test accuracy
(mean ± std over seeds) and the training time. About 8 minutes per seed on 2 CPU cores. Finished runs under --out
are read back, so an interrupted benchmark goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench_runs import ROOT, finish, spread, train_run

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLASSIFIERS = {
    "MiniLM-L6 (encoder)": ROOT / "configs" / "quickstart" / "sentiment-minilm-lora.yaml",
    "SmolLM2-135M (decoder)": ROOT / "configs" / "quickstart" / "sentiment-smollm2-lora.yaml",
}
TARGET_TOKEN_RATIO = 0.6


def _finished(run_dir: Path) -> dict | None:
    try:
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        eff = json.loads((run_dir / "efficiency.json").read_text())
    except (OSError, ValueError):
        return None
    return {"accuracy": metrics["test"]["accuracy"], "train_seconds": eff["train_seconds"]}


def classifier_part(args) -> int:
    rows = []
    out = Path(args.out)
    for seed in args.seeds:
        for name, config in CLASSIFIERS.items():
            run_dir = out / f"{config.stem}-seed{seed}"
            row = {"model": name, "seed": seed, "run": str(run_dir)}
            done = _finished(run_dir)
            if done is None:
                sets = [f"train.seed={seed}", f"data.max_train_samples={args.train_rows}", *args.set]
                _, error = train_run(config, sets, run_dir, f"{name} seed {seed}")
                done = None if error else _finished(run_dir)
                if error:
                    row["error"] = error
            if done:
                row.update(done)
                print(
                    f"[{name} seed {seed}] accuracy {done['accuracy']:.4f}, {done['train_seconds']:.0f} s", flush=True
                )
            rows.append(row)
    lines = [
        f"Classifiers on rotten tomatoes, {args.train_rows} training rows, 1 epoch, seeds {args.seeds}",
        "| model | test accuracy | training s |",
        "|---|---:|---:|",
    ]
    for name in CLASSIFIERS:
        ok = [r for r in rows if r["model"] == name and "accuracy" in r]
        lines.append(
            f"| {name} | {spread([r['accuracy'] for r in ok])} | {spread([r['train_seconds'] for r in ok], 0)} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    return finish(rows, table, args.set, args.json, "the shipped configs")


def tokens_part(args) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from tuneforge.data.sources import read_table
    from tuneforge.data.text import count_han
    from tuneforge.models.loader import load_tokenizer, resolve_model
    from tuneforge.models.vocabulary import extend_tokenizer, train_new_tokens

    texts = [str(t) for t in read_table("builtin:zh-text-demo", "data.train")["text"]]
    cut = len(texts) * 9 // 10
    train = texts[:cut]
    alpaca = read_table("builtin:alpaca-zh-demo", "data.train")
    held_out = {
        "zh-text-demo, last tenth": texts[cut:],
        "alpaca-zh-demo (another source)": [f"{a}\n{b}\n{c}" for a, b, c in zip(*(alpaca[k] for k in alpaca.columns))],
    }
    path = resolve_model("builtin:smollm2-135m-instruct")
    base = load_tokenizer(path)

    def tokens(tok, some):
        return sum(len(ids) for ids in tok(some, add_special_tokens=False)["input_ids"])

    chars = {name: sum(count_han(t) for t in some) for name, some in held_out.items()}
    base_tokens = {name: tokens(base, some) for name, some in held_out.items()}
    for name, some in held_out.items():
        print(
            f"held-out {name}: {len(some)} texts, {chars[name]} Chinese characters; base SmolLM2: "
            f"{base_tokens[name] / chars[name]:.3f} tokens per Chinese character"
        )
    rows = []
    for n in args.new_tokens:
        tok = load_tokenizer(path)
        added = extend_tokenizer(tok, train_new_tokens(tok, train, n))
        for name, some in held_out.items():
            ratio = tokens(tok, some) / base_tokens[name]
            per = tokens(tok, some) / chars[name]
            rows.append({"new_tokens": n, "added": len(added.tokens), "held_out": name, "ratio": ratio})
            print(
                f"--new-tokens {n} ({len(added.tokens)} added), {name}: {per:.3f} tokens per Chinese character, "
                f"{ratio:.2f}x the base's tokens (target <= {TARGET_TOKEN_RATIO}x)",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    return 0


RECIPE = ROOT / "configs" / "chinese"
LN2 = 0.6931471805599453


def _bits_per_char(run_dir: Path) -> dict | None:
    """Held-out bits per character of the answers: the run's final held-out loss (nats per trained token, eval/
    metrics.json) times its trained tokens, over the characters of the held-out answers (data/split/), in bits.
    Tokenizers with different vocabularies compare on this, not on loss per token."""
    try:
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        eff = json.loads((run_dir / "efficiency.json").read_text())
    except (OSError, ValueError):
        return None
    held = metrics.get("test") if isinstance(metrics.get("test"), dict) and "tokens" in metrics["test"] else None
    held = held or metrics.get("validation_final") or metrics.get("validation")
    split = run_dir / "data" / "split" / "validation.jsonl"
    if not held or "tokens" not in held or not split.is_file():
        return None
    records = [json.loads(line) for line in split.read_text(encoding="utf-8").splitlines() if line.strip()]
    # a record is the conversation (messages): the trained text is its assistant turns
    chars = sum(len(m["content"]) for r in records for m in r if m.get("role") == "assistant")
    return {
        "bits_per_char": held["loss"] * held["tokens"] / LN2 / chars,
        "loss_per_token": held["loss"],
        "tokens": held["tokens"],
        "chars": chars,
        "train_seconds": eff["train_seconds"],
    }


def _stage(config: Path, sets: list[str], run_dir: Path, tag: str) -> str | None:
    """Train one stage unless a finished run is there; the error's text when it failed."""
    if (run_dir / "eval" / "metrics.json").is_file():
        return None
    _, error = train_run(config, sets, run_dir, tag)
    return error


def recipe_part(args) -> int:
    """(a) vocabulary + embeddings, (b) LoRA pre-training, (c) SFT, each a third of the budget, against plain SFT
    on the base for the whole budget; held-out bits per character on the same alpaca-zh-demo validation split."""
    import subprocess

    out = Path(args.out)
    rows = []
    third = args.minutes / 3
    for seed in args.seeds:
        common = [f"train.seed={seed}", "task.compare_base=false", "task.report_prompts=0", *args.set]
        sft = [*common, "train.eval_strategy=no", "data.max_length=1024"]
        a, b, c = (out / f"recipe-{x}-seed{seed}" for x in "abc")
        plain = out / f"plain-sft-seed{seed}"
        error = _stage(RECIPE / "a-vocabulary-smollm2.yaml", [*common, f"train.max_minutes={third}"], a, f"a {seed}")
        if not error:
            sets = [*common, f"model.name={a}", f"train.max_minutes={third}"]
            error = _stage(RECIPE / "b-pretrain-smollm2-lora.yaml", sets, b, f"b {seed}")
        merged = out / f"recipe-b-seed{seed}-merged"
        if not error and not (merged / "config.json").is_file():
            cmd = [sys.executable, "-m", "tuneforge", "merge", str(b), "--out", str(merged), "--overwrite"]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            error = None if done.returncode == 0 else f"merge: {done.stderr.strip().splitlines()[-1:]}"
        if not error:
            sets = [*sft, f"model.name={merged}", f"train.max_minutes={third}"]
            error = _stage(RECIPE / "c-sft-alpaca-zh-smollm2-lora.yaml", sets, c, f"c {seed}")
        rows.append({"arm": "recipe (a)+(b)+(c)", "seed": seed, "run": str(c), **({"error": error} if error else {})})
        if not error:
            rows[-1].update(_bits_per_char(c) or {"error": "no held-out loss"})
            rows[-1]["train_seconds"] = sum(
                json.loads((r / "efficiency.json").read_text())["train_seconds"] for r in (a, b, c)
            )
        sets = [*sft, "model.name=builtin:smollm2-135m-instruct", f"train.max_minutes={args.minutes}"]
        error = _stage(RECIPE / "c-sft-alpaca-zh-smollm2-lora.yaml", sets, plain, f"plain {seed}")
        rows.append({"arm": "plain SFT", "seed": seed, "run": str(plain), **({"error": error} if error else {})})
        if not error:
            rows[-1].update(_bits_per_char(plain) or {"error": "no held-out loss"})
        for r in rows[-2:]:
            if "bits_per_char" in r:
                print(
                    f"[{r['arm']} seed {seed}] {r['bits_per_char']:.4f} bits/char, {r['train_seconds']:.0f} s",
                    flush=True,
                )
    lines = [
        f"Held-out bits per character of alpaca-zh-demo answers, {args.minutes:g} minutes of training per arm, "
        f"seeds {args.seeds}",
        "| arm | bits per character | training s |",
        "|---|---:|---:|",
    ]
    for arm in ("recipe (a)+(b)+(c)", "plain SFT"):
        ok = [r for r in rows if r["arm"] == arm and "bits_per_char" in r]
        lines.append(
            f"| {arm} | {spread([r['bits_per_char'] for r in ok])} | {spread([r['train_seconds'] for r in ok], 0)} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    return finish(rows, table, args.set, args.json, "the shipped configs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("tokens", "classifier", "recipe"), required=True)
    ap.add_argument("--minutes", type=float, default=12.0, help="recipe: training minutes per arm")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    ap.add_argument("--train-rows", type=int, default=2000)
    ap.add_argument("--new-tokens", type=lambda s: [int(x) for x in s.split(",")], default=[2000, 4000, 8000])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-chinese"))
    ap.add_argument("--json")
    ap.add_argument("--set", action="append", default=[], help="a config override for every run (KEY=VALUE)")
    args = ap.parse_args()
    return {"classifier": classifier_part, "tokens": tokens_part, "recipe": recipe_part}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
