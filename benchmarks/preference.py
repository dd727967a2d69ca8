"""Held-out quality of preference tuning over seeds: DPO, ORPO, SimPO and KTO (and a reward model) on
builtin:dpo-en-demo, SmolLM2-135M-Instruct + LoRA r16, each loss at its shipped config.

Every run is `tuneforge train` in its own subprocess, on the shipped config of its loss
(configs/preference/<loss>-smollm2-lora.yaml; the reward model's configs/reward/rm-smollm2-lora.yaml), with
`train.seed` set to the seed. The held-out split (20% of the pairs whose prompt fits data.max_prompt_length) follows
the seed, so each seed is scored on different pairs, and every loss and the reward model of one seed on the same
ones (one split function, one seed). KTO trains on the same pairs, read as one good and one bad answer each
(`data.train` set to builtin:dpo-en-demo; its shipped config reads builtin:kto-en-demo).

What is printed per loss: the mean and the spread (population standard deviation; min-max) over the seeds of the
held-out reward accuracy (KTO: its AUC over good x bad answers, docs/preference.md), the reward margin and the loss,
and the training time; then the first seed's held-out prompts answered greedily by the base model and the tuned one
(the run's own eval/report.md table). Target of issue 34: DPO's held-out reward accuracy >= 0.65.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/preference.py [--losses dpo,orpo,simpo,kto] [--reward]
        [--seeds 1,2,3] [--out DIR] [--json PATH] [--set KEY=VALUE ...]

A run of one loss and seed takes about 20 minutes on 2 CPU cores (66 steps of 2 pairs in bf16 autocast at about
16 s each, then the evaluation and the answers), so the default (4 losses x 3 seeds) takes about 4 hours;
`--losses dpo --seeds 1,2,3 --reward` about 1.5 hours. `--set` adds config overrides to every run (for example
`--set train.max_steps=20` for a quick check of the script; such a run is not a measurement of the shipped configs).
Runs already finished under --out (a model and eval/metrics.json) are read back, not trained again, so an
interrupted benchmark goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from bench_runs import ROOT, finish, spread, train_run

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = "builtin:dpo-en-demo"
LOSSES = ("dpo", "orpo", "simpo", "kto")
TARGET_DPO_ACCURACY = 0.65
#: held-out metrics shown, in order
SHOWN = ("reward_accuracy", "reward_margin", "loss")


def config_of(kind: str) -> Path:
    if kind == "reward":
        return ROOT / "configs" / "reward" / "rm-smollm2-lora.yaml"
    return ROOT / "configs" / "preference" / f"{kind}-smollm2-lora.yaml"


def overrides(kind: str, seed: int, answers: bool, extra: list[str]) -> list[str]:
    out = [f"train.seed={seed}", f"data.train={DATA}"]
    if kind != "reward":
        out.append(f"task.report_prompts={5 if answers else 0}")
    return out + list(extra)


def held_out(run_dir: Path) -> dict | None:
    """The run's held-out metrics (test split, else validation) from eval/metrics.json, None when it has none."""
    try:
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    for split in ("test", "validation"):
        res = metrics.get(split)
        if isinstance(res, dict) and "reward_accuracy" in res:
            return res
    return None


def train_seconds(run_dir: Path) -> float | None:
    """The run's training time (efficiency.json), without loading, data preparation and the final evaluation."""
    try:
        return float(json.loads((run_dir / "efficiency.json").read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def answers_table(run_dir: Path) -> str:
    """The held-out prompts section of the run's eval/report.md (empty when it has none)."""
    try:
        text = (run_dir / "eval" / "report.md").read_text()
    except OSError:
        return ""
    for head in ("## Held-out prompts", "## Held-out pairs"):
        if head in text:
            section = text[text.index(head) :]
            after = section.find("\n## ", len(head))
            return (section if after < 0 else section[:after]).strip()
    return ""


def train(kind: str, seed: int, run_dir: Path, answers: bool, extra: list[str]) -> dict:
    """Train one run (or read back a finished one): {"kind", "seed", "seconds", metrics...}."""
    res = held_out(run_dir)
    seconds = None
    if res is None:
        tag = f"preference {kind} seed {seed}"
        seconds, error = train_run(config_of(kind), overrides(kind, seed, answers, extra), run_dir, tag)
        if error:
            return {"kind": kind, "seed": seed, "error": error}
        res = held_out(run_dir)
        if res is None:
            return {"kind": kind, "seed": seed, "error": "no held-out metrics"}
    row = {"kind": kind, "seed": seed, "seconds": seconds, "run": str(run_dir), "train_seconds": train_seconds(run_dir)}
    row.update({k: res[k] for k in (*SHOWN, "pairs", "answers") if k in res})
    shown = ", ".join(f"{k} {row[k]:.4f}" for k in SHOWN if k in row)
    print(f"[preference] {kind} seed {seed}: {shown}" + (f" ({seconds:.0f} s)" if seconds else ""), flush=True)
    return row


def table(rows: list[dict], kinds: list[str]) -> str:
    lines = [
        "| loss | seeds | held-out reward accuracy | reward margin | held-out loss | held-out pairs | training minutes"
        " |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        ok = [r for r in rows if r["kind"] == kind and "error" not in r]
        failed = [r for r in rows if r["kind"] == kind and "error" in r]
        secs = [r["train_seconds"] / 60 for r in ok if r.get("train_seconds")]
        size = sorted({int(r.get("pairs") or r.get("answers") or 0) for r in ok})
        lines.append(
            f"| {kind} | {','.join(str(r['seed']) for r in ok)}"
            + (f" ({len(failed)} failed)" if failed else "")
            + f" | {spread([r['reward_accuracy'] for r in ok])} | {spread([r['reward_margin'] for r in ok])}"
            + f" | {spread([r['loss'] for r in ok if 'loss' in r])} | {','.join(map(str, size))}"
            + f" | {spread(secs, 1)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--losses", default=",".join(LOSSES), help="comma-separated: dpo,orpo,simpo,kto (or none)")
    ap.add_argument("--reward", action="store_true", help="also train the reward model (configs/reward)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--out", default="runs/bench-preference", help="where the runs go (finished runs are reused)")
    ap.add_argument("--json", default=None, help="write every row and the table here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    args = ap.parse_args(argv)
    losses = [x for x in args.losses.split(",") if x and x != "none"]
    unknown = [x for x in losses if x not in LOSSES]
    if unknown:
        ap.error(f"--losses: unknown {unknown}; choose from {','.join(LOSSES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    kinds = losses + (["reward"] if args.reward else [])
    out = Path(args.out)
    rows = []
    for seed in seeds:  # seed-major: a stopped benchmark has every loss of the first seeds
        for kind in kinds:
            run_dir = out / f"{kind}-seed{seed}"
            rows.append(train(kind, seed, run_dir, answers=seed == seeds[0], extra=args.set))
    report = table(rows, kinds)
    print("\n" + report)
    if "dpo" in losses:
        acc = [r["reward_accuracy"] for r in rows if r["kind"] == "dpo" and "error" not in r]
        if acc:
            mean = statistics.fmean(acc)
            verdict = "met" if mean >= TARGET_DPO_ACCURACY else "NOT met"
            print(f"\nDPO held-out reward accuracy {mean:.3f} (target >= {TARGET_DPO_ACCURACY}): {verdict}")
    for kind in losses:
        section = answers_table(out / f"{kind}-seed{seeds[0]}")
        if section:
            print(f"\n### {kind}, seed {seeds[0]}\n\n{section}")
    return finish(rows, report, args.set, args.json, "the shipped configs")


if __name__ == "__main__":
    sys.exit(main())
