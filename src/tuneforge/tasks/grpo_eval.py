"""The final evaluation of a GRPO run on its held-out prompts (test, else validation): the rewards and accuracy of the
tuned model's greedy answers, of its sampled answers (`num_generations` per prompt, the training temperature) and of
the base model's greedy answers; eval/report.md with those numbers, the reward by training step, and for a few
prompts the best and the worst sampled answer of their group (eval/metrics.json holds the numbers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tuneforge.config.schema import RunConfig


def _answers(model, prompts, tok, state, t, *, sample: bool, n: int, batch: int, what: str):
    """(texts, rows' record indices) of the answers of every held-out prompt, `n` per prompt."""
    from tuneforge.tasks.grpo_prepare import PromptCollator
    from tuneforge.tasks.grpo_step import generate

    collate = PromptCollator(tok.pad_token_id)
    texts, index = [], []
    device = next(model.parameters()).device
    for lo in range(0, len(prompts), batch):
        rows = [prompts[i] for i in range(lo, min(lo + batch, len(prompts)))]
        b = collate(rows)
        done = generate(
            model,
            b["input_ids"].to(device),
            b["attention_mask"].to(device),
            tok,
            state.stop_token_ids,
            t.max_new_tokens,
            n=n,
            sample=sample,
            temperature=t.temperature,
            top_p=t.top_p,
            heartbeat=what,
        )
        texts += done.texts
        index += [int(i) for i in b["index"].tolist()]
    return texts, index


def _summary(scores, accuracy: str | None) -> dict:
    out = {"reward": float(np.mean(scores.total))}
    for name, values in scores.per_reward.items():
        out[f"reward_{name}"] = float(np.mean(values))
    if accuracy is not None:
        out["accuracy"] = out[f"reward_{accuracy}"]
    return out


def final_evaluation(
    cfg: RunConfig, trainer, prepared, eval_dir: str, val_metrics: dict, rewards, without_adapters=None
) -> dict:
    """`rewards`: the run's RewardSet (the task's own, so a reward run among them is loaded once)."""
    from tuneforge.tasks.grpo import GRPOTask
    from tuneforge.tasks.grpo_step import score
    from tuneforge.tasks.sft_eval import base_model

    t, state = cfg.task, prepared.state
    tok = state.tokenizer
    split = "test" if prepared.test is not None else "validation"
    data = prepared.test if prepared.test is not None else prepared.validation
    metrics: dict = {"validation": val_metrics, "data": dict(prepared.info)}
    out_dir = Path(eval_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if data is None:
        metrics["note"] = "no held-out prompts: no evaluation beyond the training rewards"
        write_report(out_dir, metrics, None, [], _curve(trainer))
        return metrics
    accuracy = GRPOTask.accuracy_reward(cfg)
    model = trainer.model
    model.eval()
    batch = max(1, cfg.train.eval_batch_size or cfg.train.batch_size)
    n = len(data)
    print(
        f"tuneforge: evaluating on {n} held-out prompts ({split}): greedy answers of the tuned model, "
        f"{t.num_generations} sampled answers each" + (", greedy answers of the base model" if t.compare_base else ""),
        file=sys.stderr,
        flush=True,
    )
    greedy, index = _answers(model, data, tok, state, t, sample=False, n=1, batch=batch, what="held-out greedy answers")
    result = {"prompts": n, "greedy": _summary(score(rewards, state.records, index, greedy, 1), accuracy)}
    g = t.num_generations
    sampled, s_index = _answers(model, data, tok, state, t, sample=True, n=g, batch=batch, what="held-out samples")
    s_scores = score(rewards, state.records, s_index, sampled, g)
    result["sampled"] = _summary(s_scores, accuracy)
    base_texts = None
    if t.compare_base:
        with base_model(cfg, model, without_adapters, tok) as b:
            base_texts, _ = _answers(b, data, tok, state, t, sample=False, n=1, batch=batch, what="base answers")
        result["base_greedy"] = _summary(score(rewards, state.records, index, base_texts, 1), accuracy)
    result.update({k: v for k, v in result["greedy"].items()})  # the headline numbers: the tuned greedy answers
    metrics[split] = result
    samples = []
    for p in range(min(t.report_samples, n)):
        group = list(range(p * g, (p + 1) * g))
        ranked = sorted(group, key=lambda i: s_scores.total[i])
        record = state.records[index[p]]
        samples.append(
            {
                "prompt": record["prompt"][-1]["content"],
                "best": (sampled[ranked[-1]], s_scores.total[ranked[-1]]),
                "worst": (sampled[ranked[0]], s_scores.total[ranked[0]]),
                "greedy": greedy[p],
                "base": base_texts[p] if base_texts else None,
            }
        )
    write_report(out_dir, metrics, split, samples, _curve(trainer))
    return metrics


def _curve(trainer) -> list[tuple[int, float]]:
    """(step, mean reward) of every training log."""
    return [(h["step"], h["reward"]) for h in trainer.state.log_history if "reward" in h and "loss" in h]


def write_report(out_dir: Path, metrics: dict, split: str | None, samples: list[dict], curve: list) -> None:
    from tuneforge.evaluation.lm import md_cell

    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    lines = ["# Evaluation report (GRPO)", ""]
    res = metrics.get(split) if split else None
    if res:
        cols = [c for c in ("base_greedy", "greedy", "sampled") if c in res]
        names = {"base_greedy": "base, greedy", "greedy": "tuned, greedy", "sampled": "tuned, sampled"}
        keys = [k for k in res["greedy"]]
        lines += [f"Held-out split: **{split}** ({res['prompts']} prompts).", ""]
        lines += ["| metric | " + " | ".join(names[c] for c in cols) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| {k} | " + " | ".join(f"{res[c].get(k, float('nan')):.4f}" for c in cols) + " |" for k in keys]
        lines.append("")
    if curve:
        lines += ["## Mean reward of the sampled completions by training step", "", "| step | reward |", "|---|---|"]
        every = max(1, len(curve) // 20)
        lines += [f"| {s} | {r:.4f} |" for s, r in curve[::every]]
        lines.append("")
    if samples:
        lines += ["## Held-out prompts: best and worst sampled answer of the group", ""]
        lines += ["| prompt | best (reward) | worst (reward) | tuned, greedy | base, greedy |", "|---|---|---|---|---|"]
        for s in samples:
            cells = [
                md_cell(s["prompt"]),
                f"{md_cell(s['best'][0])} ({s['best'][1]:.2f})",
                f"{md_cell(s['worst'][0])} ({s['worst'][1]:.2f})",
                md_cell(s["greedy"]),
                md_cell(s["base"]) if s["base"] is not None else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    (out_dir / "report.md").write_text("\n".join(lines))
