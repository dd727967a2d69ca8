"""The final evaluation of a causal_lm run: loss and perplexity on the held-out split, greedy answers of the
tuned model to held-out prompts, and the same for the base model (adapters switched off by the method, or
the base reloaded) side by side in eval/report.md."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

log = logging.getLogger("tuneforge")


@contextlib.contextmanager
def base_model(cfg: RunConfig, model, without_adapters=None, tokenizer=None):
    """The base model for comparison: the method's adapters switched off when it has them (`without_adapters`,
    the method's hook), else a fresh copy of the base loaded beside the tuned one."""
    if without_adapters is not None:
        with without_adapters(model) as base:
            if base is not None:
                yield base
                return
    from transformers import AutoModelForCausalLM

    from tuneforge.models.loader import load_model, resolve_model
    from tuneforge.models.vocabulary_setup import grow_base_copy

    path = resolve_model(cfg.model.name, cfg.model.revision)
    base = load_model(path, AutoModelForCausalLM, cfg.model.dtype, cfg.model.trust_remote_code)
    if tokenizer is not None:  # tokens the run added to the vocabulary: rows as they started
        grow_base_copy(base, path, tokenizer)
    base.to(next(model.parameters()).device).eval()
    try:
        yield base
    finally:
        del base


def announce_answers(cfg: RunConfig, n: int) -> None:
    """Say that the held-out prompts are being answered for eval/report.md: generation takes minutes on a CPU."""
    if n:
        both = " and the base model" if cfg.task.compare_base else ""
        print(
            f"tuneforge: answering {n} held-out prompts with the tuned model{both} for eval/report.md "
            f"(greedy, up to {cfg.task.report_max_new_tokens} tokens each)",
            file=sys.stderr,
            flush=True,
        )


def final_evaluation(
    cfg: RunConfig, make_collator, trainer, prepared, eval_dir: str, val_metrics: dict, without_adapters=None
) -> dict:
    from tuneforge.evaluation.lm import lm_loss, write_lm_report
    from tuneforge.models.generation import ChatModel, generate

    state = prepared.state
    split_name = "test" if prepared.test is not None else "validation"
    data = prepared.test if prepared.test is not None else prepared.validation
    model, tok = trainer.model, trainer.processing_class
    model.eval()
    bs = cfg.train.eval_batch_size or 2 * cfg.train.batch_size
    collate = make_collator(tok)
    result: dict = {}
    convs = state.report_conversations
    prompts = [c[: max(i for i, m in enumerate(c) if m["role"] == "assistant")] for c in convs]
    refs = [c[max(i for i, m in enumerate(c) if m["role"] == "assistant")]["content"] for c in convs]
    settings = {"temperature": 0.0, "max_new_tokens": cfg.task.report_max_new_tokens}
    stops = state.stop_token_ids

    def make(m):
        return ChatModel(m, tok, state.chat.jinja if state.chat else None, state.system_prompt, stops)

    announce_answers(cfg, len(prompts))
    tuned_answers = generate(make(model), prompts, settings) if prompts else []
    base_answers = None
    if data is not None:
        result.update(lm_loss(model, data, collate, bs))
    if cfg.task.compare_base and (data is not None or prompts):
        with base_model(cfg, model, without_adapters, tok) as base:
            if data is not None:
                result.update(
                    {f"base_{k}": v for k, v in lm_loss(base, data, collate, bs).items() if k in ("loss", "perplexity")}
                )
            base_answers = generate(make(base), prompts, settings) if prompts else None
    if tuned_answers:
        result["stopped_by_eos"] = round(
            sum(a["finish_reason"] == "stop" for a in tuned_answers) / len(tuned_answers), 4
        )
    if base_answers:
        result["base_stopped_by_eos"] = round(
            sum(a["finish_reason"] == "stop" for a in base_answers) / len(base_answers), 4
        )
    metrics = {"validation": val_metrics}
    if data is None:
        log.warning("no held-out split: no evaluation beyond the training loss")
    elif split_name == "test":
        metrics["test"] = result
    else:
        metrics["validation"] = {**val_metrics, **result}
    metrics["data"] = dict(prepared.info)
    write_lm_report(
        Path(eval_dir),
        metrics,
        split_name if data is not None else None,
        prompts,
        refs,
        tuned_answers,
        base_answers,
        state.example,
    )
    if prepared.teacher is not None and data is not None:
        from tuneforge.tasks.sft_distill import teacher_vs_student

        metrics["distill"] = teacher_vs_student(
            model, tok, prepared, data, collate, bs, metrics.get(split_name) or {}, eval_dir, split_name
        )
    return metrics
