"""The final evaluation of a preference run: the loss, reward accuracy and margin on the held-out pairs (test, else
validation), and the held-out prompts answered greedily by the base model and the tuned one, side by side with
the chosen answer, in eval/report.md (eval/metrics.json holds the numbers)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tuneforge.config.schema import RunConfig

log = logging.getLogger("tuneforge")

#: metrics in report order, with how each is printed
SHOWN = (
    ("loss", "{:.4f}"),
    ("reward_accuracy", "{:.1%}"),
    ("reward_margin", "{:.4f}"),
    ("rewards_chosen", "{:.4f}"),
    ("rewards_rejected", "{:.4f}"),
    ("logps_chosen", "{:.2f}"),
    ("logps_rejected", "{:.2f}"),
    ("kl", "{:.4f}"),
)


def final_evaluation(
    cfg: RunConfig, trainer, prepared, eval_dir: str, val_metrics: dict, without_adapters=None
) -> dict:
    from tuneforge.models.generation import ChatModel, generate
    from tuneforge.tasks.sft_eval import announce_answers, base_model

    state = prepared.state
    split = "test" if prepared.test is not None else "validation"
    data = prepared.test if prepared.test is not None else prepared.validation
    model, tok = trainer.model, trainer.processing_class
    metrics: dict = {"validation": val_metrics}
    if data is not None:
        raw = trainer.predict(data, metric_key_prefix=split).metrics
        result = {k[len(split) + 1 :]: v for k, v in raw.items() if k.startswith(f"{split}_")}
        result = {k: v for k, v in result.items() if k in dict(SHOWN)}
        result["pairs" if cfg.task.loss != "kto" else "answers"] = len(data)
        if split == "test":
            metrics["test"] = result
        else:
            metrics["validation"] = {**val_metrics, **result}
    else:
        log.warning("no held-out pairs: no evaluation beyond the training loss")
    model.eval()
    prompts = [p["prompt"] for p in state.report_pairs]
    settings = {"temperature": 0.0, "max_new_tokens": cfg.task.report_max_new_tokens}

    def make(m):
        return ChatModel(m, tok, state.chat.jinja, state.system_prompt, state.stop_token_ids)

    announce_answers(cfg, len(prompts))
    tuned = generate(make(model), prompts, settings) if prompts else []
    base = None
    if prompts and cfg.task.compare_base:
        with base_model(cfg, model, without_adapters, tok) as b:
            base = generate(make(b), prompts, settings)
    metrics["data"] = dict(prepared.info)
    write_report(Path(eval_dir), metrics, split if data is not None else None, state.report_pairs, tuned, base)
    return metrics


def write_report(
    out_dir: Path, metrics: dict, split: str | None, pairs: list[dict], tuned: list, base: list | None
) -> None:
    """metrics.json and report.md: held-out metrics, then prompts with the chosen answer, base and tuned answers."""
    from tuneforge.evaluation.lm import answer_cell, md_cell

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    lines = ["# Evaluation report (preference)", ""]
    res = metrics.get(split) if split else None
    if res:
        size = f"{res['pairs']} pairs" if "pairs" in res else f"{res.get('answers')} answers"
        lines += [f"Held-out split: **{split}** ({size}).", "", "| metric | tuned |", "|---|---|"]
        lines += [f"| {k} | {fmt.format(res[k])} |" for k, fmt in SHOWN if k in res]
        lines += [
            "",
            "Rewards are beta x (policy - reference) log-probability of each answer (SimPO / ORPO: of the policy "
            "alone, per token); reward accuracy is the share of pairs whose chosen answer has the larger reward.",
            "",
        ]
    if pairs and tuned:
        lines += ["## Held-out prompts (greedy decoding)", ""]
        lines += (
            ["| prompt | chosen answer | base model | tuned |", "|---|---|---|---|"]
            if base
            else ["| prompt | chosen answer | tuned |", "|---|---|---|"]
        )
        for i, p in enumerate(pairs):
            user = md_cell(p["prompt"][-1]["content"])
            cells = [user, md_cell(p["chosen"]), *([answer_cell(base[i])] if base else []), answer_cell(tuned[i])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    (out_dir / "report.md").write_text("\n".join(lines))
