"""Distillation for causal LMs (SFT): token-level (the student matches the teacher's next-token distributions
on the trained tokens, in chunks: kernels/distill.token_kd_loss) or sequence-level (the teacher answers the
training prompts once, cached, and the student learns the answers with ordinary SFT)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig


def distill(task, prepared, tokenizer, teacher, cache_dir):
    """`token`: the student matches the teacher's next-token distributions on the trained tokens (checked
    here: a shared vocabulary). `sequence`: the teacher answers the training prompts once (cached) and the
    student learns those answers with ordinary SFT, whatever the tokenizers."""
    prepared.teacher = teacher
    if task.cfg.distill.mode == "token":
        why = vocab_mismatch(teacher, tokenizer)
        if why:
            raise ConfigError(
                f"distill.teacher: {why}; token-level distillation needs a shared vocabulary "
                f"(set distill.mode: sequence to distil across tokenizers)"
            )
        return prepared
    from dataclasses import replace

    from tuneforge.data.outputs_cache import cached_json
    from tuneforge.data.sft_encode import encode_records
    from tuneforge.tasks.sft_prepare import assemble

    st = prepared.state
    recs = st.records
    if st.fmt == "text":
        raise ConfigError(
            "distill.mode: sequence needs conversations to answer (data.format 'text' has no "
            "prompts); use distill.mode: token"
        )
    cut = [max(i for i, m in enumerate(c) if m["role"] == "assistant") for c in recs.train]
    prompts = [c[:k] for c, k in zip(recs.train, cut)]
    n = task.cfg.task.generation.max_new_tokens
    key = {"teacher": teacher.fingerprint(), "prompts": prompts, "max_new_tokens": n}
    print(
        f"tuneforge: distillation: the teacher answers {len(prompts)} training prompts (once; cached in {cache_dir})",
        file=sys.stderr,
        flush=True,
    )
    answers = cached_json(Path(cache_dir), "teacher_answers", key, lambda: teacher.answers(prompts, n))
    train = [p + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)]
    recs = replace(recs, train=train)
    settings = task._settings(st.fmt, st.chat, st.system_prompt)
    stats: dict = {}

    def enc(rs, name):
        return None if not rs else encode_records(rs, tokenizer, name, stats, settings)

    train_ds = enc(recs.train, "train")
    if train_ds is None:
        raise DataError("distill.mode sequence: no training example is left from the teacher's answers")
    enc(recs.validation, "validation"), enc(recs.test, "test")  # their lengths, for the data report
    new = assemble(
        task.cfg,
        train_ds,
        prepared.validation,
        prepared.test,
        recs,
        replace(st, records=recs, example=stats.get("example")),
        stats,
    )
    new.teacher, new.train_ids = teacher, prepared.train_ids
    new.info["distill"] = {"mode": "sequence", "teacher_answers": len(answers)}
    return new


def vocab_mismatch(teacher, tokenizer) -> str | None:
    t_tok = teacher.tokenizer
    if t_tok.get_vocab() != tokenizer.get_vocab():
        return f"the teacher's tokenizer ({len(t_tok)} tokens) differs from the student's ({len(tokenizer)})"
    head = teacher.model.get_output_embeddings() if hasattr(teacher.model, "get_output_embeddings") else None
    if head is None:
        return "the teacher has no output layer over the vocabulary"
    return None


def training_loss(cfg: RunConfig, prepared):
    if prepared.teacher is None or cfg.distill.mode != "token":
        return None
    import torch
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from tuneforge.kernels.chunked_ce import causal_lm_loss
    from tuneforge.kernels.distill import token_kd_loss

    dc = cfg.distill
    teacher = prepared.teacher.model

    def core(model):
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def hidden(model, inputs):
        out = core(model).get_decoder()(**inputs)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def loss(model, inputs):
        if not model.training:  # evaluation: the ordinary loss and logits on the true tokens
            out = model(**inputs)
            return out.loss, out
        labels = inputs.pop("labels")
        if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
            raise ConfigError(
                "distill.mode: token cannot see the virtual tokens of prompt/prefix tuning; use distill.mode: sequence"
            )
        s_hidden = hidden(model, inputs)
        s_weight = core(model).get_output_embeddings().weight
        with torch.no_grad():
            t_hidden = hidden(teacher, {k: v.to(next(teacher.parameters()).device) for k, v in inputs.items()})
        t_weight = core(teacher).get_output_embeddings().weight
        value = dc.alpha * token_kd_loss(
            s_hidden,
            s_weight,
            t_hidden.to(s_hidden.device),
            t_weight.to(s_hidden.device),
            labels,
            dc.divergence,
            dc.temperature,
            dc.beta,
        )
        if dc.alpha < 1:
            value = value + (1 - dc.alpha) * causal_lm_loss(s_hidden, s_weight, labels)
        return value, CausalLMOutputWithPast(loss=value, logits=None)

    return loss


def teacher_vs_student(
    model, tokenizer, prepared, data, collate, batch_size: int, student_metrics: dict, eval_dir, split: str
) -> dict:
    """The teacher-vs-student table of a causal_lm distillation run: loss and perplexity on the held-out
    split, parameters, size, CPU latency/throughput, and the share of trained tokens where both predict the same
    next token. Quality, speed and agreement need a shared vocabulary (the held-out rows are the student's
    tokens); across tokenizers only size and parameters are compared."""
    import torch

    from tuneforge.evaluation.lm import lm_loss
    from tuneforge.evaluation.speed import dir_size_mb
    from tuneforge.tasks import distill_report as dr

    teacher = prepared.teacher
    shared = vocab_mismatch(teacher, tokenizer) is None
    keys = ("loss", "perplexity")
    t_row = {"parameters": dr.count_parameters(teacher.model), "size_mb": teacher.size_mb()}
    s_row = {
        **{k: student_metrics.get(k) for k in keys},
        "parameters": dr.count_parameters(model),
        "size_mb": dir_size_mb(Path(eval_dir).parent / "model"),
        **dr.speed(model, data, collate),
    }
    agreement = None
    if shared:
        t_row.update({k: v for k, v in lm_loss(teacher.model, data, collate, batch_size).items() if k in keys})
        t_row.update(dr.speed(teacher.model, data, collate))
        same, total = 0, 0
        t_dev, s_dev = next(teacher.model.parameters()).device, next(model.parameters()).device
        with torch.no_grad():
            for i in range(0, len(data), batch_size):
                batch = collate([data[j] for j in range(i, min(i + batch_size, len(data)))])
                labels = batch.pop("labels")
                mask = labels[:, 1:] != -100
                s = model(**{k: v.to(s_dev) for k, v in batch.items()}).logits[:, -labels.size(1) :][:, :-1]
                t = teacher.model(**{k: v.to(t_dev) for k, v in batch.items()}).logits[:, -labels.size(1) :][:, :-1]
                hit = (s.argmax(-1).cpu() == t.argmax(-1).cpu()) & mask
                same, total = same + int(hit.sum()), total + int(mask.sum())
        agreement = same / total if total else 0.0
    return dr.write_section(eval_dir, t_row, s_row, agreement, split, keys)
