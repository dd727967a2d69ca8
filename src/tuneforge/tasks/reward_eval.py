"""The metrics and reports of reward-model runs: reward accuracy (the share of pairs whose chosen answer gets the
larger reward), mean margin and mean rewards, on held-out pairs at the end of training (eval/metrics.json,
eval/report.md with a few pairs and both rewards) and on a pairs file with `tuneforge eval`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("tuneforge")

#: longest text of a report cell, in characters
CELL_CHARS = 300
#: metrics in report order, with how each is printed
SHOWN = (
    ("loss", "{:.4f}"),
    ("reward_accuracy", "{:.1%}"),
    ("reward_margin", "{:.4f}"),
    ("rewards_chosen", "{:.4f}"),
    ("rewards_rejected", "{:.4f}"),
)


def reward_metrics(chosen, rejected) -> dict[str, float]:
    """Reward accuracy (ties count as wrong, as in TRL), mean margin and mean reward of each side."""
    c = np.asarray(chosen, dtype=np.float64).reshape(-1)
    r = np.asarray(rejected, dtype=np.float64).reshape(-1)
    return {
        "reward_accuracy": float((c > r).mean()),
        "reward_margin": float((c - r).mean()),
        "rewards_chosen": float(c.mean()),
        "rewards_rejected": float(r.mean()),
    }


def compute_metrics(eval_pred) -> dict[str, float]:
    """The Trainer's metrics from the loss's per-pair outputs (chosen rewards, rejected rewards)."""
    chosen, rejected = eval_pred.predictions[0], eval_pred.predictions[1]
    return reward_metrics(chosen, rejected)


def shown_pairs(records: list[dict], chosen, rejected, n: int) -> list[dict]:
    """The first `n` pairs with their rewards, for the report."""
    return [
        {**{k: r[k] for k in ("prompt", "chosen", "rejected")}, "r_chosen": float(c), "r_rejected": float(x)}
        for r, c, x in zip(records[:n], chosen, rejected)
    ]


def final_evaluation(cfg, trainer, prepared, eval_dir: str, val_metrics: dict) -> dict:
    """Loss and reward metrics on the held-out pairs (test, else validation), written with `report_pairs` of them
    and their rewards into eval/metrics.json and eval/report.md."""
    split = "test" if prepared.test is not None else "validation"
    data = prepared.test if prepared.test is not None else prepared.validation
    metrics: dict = {"validation": val_metrics}
    pairs: list[dict] = []
    result = None
    if data is not None:
        out = trainer.predict(data, metric_key_prefix=split)
        raw = {k[len(split) + 1 :]: v for k, v in out.metrics.items() if k.startswith(f"{split}_")}
        result = {k: raw[k] for k, _ in SHOWN if k in raw}
        result["pairs"] = len(data)
        if split == "test":
            metrics["test"] = result
        else:
            metrics["validation"] = result = {**val_metrics, **result}
        chosen, rejected = (np.asarray(out.predictions[i]).reshape(-1) for i in (0, 1))
        pairs = shown_pairs(prepared.held_out.get(split) or [], chosen, rejected, cfg.task.report_pairs)
    else:
        log.warning("no held-out pairs: no evaluation beyond the training loss")
    metrics["data"] = dict(prepared.info)
    heading = f"**{split}** ({result['pairs']} pairs)" if result else None
    write_report(Path(eval_dir), metrics, result, heading, pairs)
    return metrics


def write_report(out_dir: Path, metrics: dict, result: dict | None, heading: str | None, pairs: list[dict]) -> None:
    """metrics.json (`metrics`) and report.md: the held-out metrics (`result`), then pairs with both rewards."""
    from tuneforge.evaluation.lm import md_cell

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    lines = ["# Evaluation report (reward model)", ""]
    if result:
        lines += [f"Held-out pairs: {heading}.", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {fmt.format(result[k])} |" for k, fmt in SHOWN if k in result]
        lines += [
            "",
            "Reward accuracy is the share of pairs whose chosen answer gets the larger reward (ties count as wrong); "
            "the margin is the mean of r_chosen - r_rejected; the loss is -log sigmoid(r_chosen - r_rejected - "
            "margin), plus the centring term when task.center_rewards_coefficient is set.",
            "",
        ]
    if pairs:

        def cell(text: str) -> str:
            return md_cell(text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + " ...")

        lines += ["## Held-out pairs and their rewards", ""]
        lines += ["| prompt | chosen answer | r_chosen | rejected answer | r_rejected |", "|---|---|---|---|---|"]
        for p in pairs:
            prompt = p["prompt"][-1]["content"] if isinstance(p["prompt"], list) else str(p["prompt"])
            cells = [cell(prompt), cell(p["chosen"]), f"{p['r_chosen']:.4f}", cell(p["rejected"])]
            lines.append("| " + " | ".join([*cells, f"{p['r_rejected']:.4f}"]) + " |")
        lines.append("")
    (out_dir / "report.md").write_text("\n".join(lines))
