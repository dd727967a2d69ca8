"""Causal-LM evaluation: token-weighted loss and perplexity, and the markdown report with base vs tuned
answers side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


@torch.no_grad()
def lm_loss(model, dataset, collate, batch_size: int = 16) -> dict:
    """Mean negative log-likelihood per target token (labels != -100) over `dataset`, and its perplexity.

    Args:
        model: a causal LM (or PEFT wrapper) returning logits.
        dataset: rows with input_ids and labels.
        collate: the task's collator.
        batch_size: rows per forward pass.

    Returns {loss, perplexity, tokens, examples}."""
    import torch.nn.functional as F

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    rows = [dataset[i] for i in range(len(dataset))]
    for s in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate(rows[s : s + batch_size]).items()}
        labels = batch.pop("labels")
        # prompt tuning prepends virtual tokens: the logits of the real tokens are the last ones
        logits = model(**batch).logits[:, -labels.size(1) :][:, :-1].float()
        target = labels[:, 1:]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(nll)
        count += int((target != -100).sum())
    if was_training:
        model.train()
    loss = total / max(count, 1)
    return {
        "loss": round(loss, 6),
        "perplexity": round(math.exp(min(loss, 50.0)), 4),
        "tokens": count,
        "examples": len(rows),
    }


def md_cell(text: str) -> str:
    """`text` as one markdown table cell (pipes escaped, line breaks as <br>)."""
    return (text or "").replace("|", "\\|").replace("\n", "<br>")


def answer_cell(answer: dict) -> str:
    """A generated answer (`generate`'s dict) as a table cell, marked when max_new_tokens cut it."""
    return md_cell(answer["response"]) + ("" if answer["finish_reason"] == "stop" else " *(cut at max tokens)*")


def write_lm_report(
    out_dir: Path,
    metrics: dict,
    split: str | None,
    prompts: list,
    refs: list,
    tuned: list,
    base: list | None,
    example: str | None,
) -> None:
    """Write metrics.json and report.md (loss/perplexity tuned vs base, answers side by side)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    lines = ["# Evaluation report (causal_lm)", ""]
    res = metrics.get(split) if split else None
    if res:
        lines += [
            f"Held-out split: **{split}** ({res.get('examples')} examples, {res.get('tokens')} target tokens).",
            "",
            "| metric | base model | tuned |",
            "|---|---|---|",
        ]
        for k in ("loss", "perplexity"):
            b = res.get(f"base_{k}")
            lines.append(f"| {k} | {'' if b is None else f'{b:.4f}'} | {res[k]:.4f} |")
        if "stopped_by_eos" in res:
            b = res.get("base_stopped_by_eos")
            lines.append(f"| answers ended by eos | {'' if b is None else f'{b:.0%}'} | {res['stopped_by_eos']:.0%} |")
        lines.append("")
    data = metrics.get("data") or {}
    if data:
        lines += [
            "## Data",
            "",
            f"- format: {data.get('format')}, template: {data.get('template')}, end-of-turn "
            f"token: `{data.get('end_of_turn_token')}`, system prompt: {data.get('system_prompt')!r}",
            f"- sizes: {data.get('sizes')}",
            f"- overflow: {data.get('overflow')}",
        ]
        if data.get("packing"):
            lines.append(f"- packing: {data['packing']}")
        lines.append("")
    if example:
        lines += ["## First training example (trained tokens in [[...]])", "", "```", example, "```", ""]
    if prompts:
        lines += [
            "## Held-out prompts (greedy decoding)",
            "",
            "| prompt | reference | base model | tuned |" if base else "| prompt | reference | tuned |",
            "|---|---|---|---|" if base else "|---|---|---|",
        ]
        for i, msgs in enumerate(prompts):
            user = msgs[-1]["content"] if msgs else ""
            t = tuned[i]
            tcell = answer_cell(t)
            if base:
                b = base[i]
                bcell = answer_cell(b)
                lines.append(f"| {md_cell(user)} | {md_cell(refs[i])} | {bcell} | {tcell} |")
            else:
                lines.append(f"| {md_cell(user)} | {md_cell(refs[i])} | {tcell} |")
        lines.append("")
    (out_dir / "report.md").write_text("\n".join(lines))
