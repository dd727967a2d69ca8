"""Instruction / chat fine-tuning (SFT) and continued pre-training of causal LMs (AutoModelForCausalLM).

Records (alpaca, sharegpt, messages, text) become conversations, are rendered with a chat template that is
checked against the tokenizer before training, and are trained with the loss on assistant turns only (each
including its end-of-turn token, so the tuned model stops). The template, system prompt and stop tokens are
saved with the model, so `tuneforge chat` / `generate` talk to it exactly as it was trained.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from tuneforge.config.schema import DataSection, RunConfig, Section, TaskConfig
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.base import TASKS, Prepared, Task

log = logging.getLogger("tuneforge")

#: data keys only the SFT task reads; other tasks reject them when they are set
SFT_DATA_KEYS = ("format", "template", "system_prompt", "variables", "train_on_prompt", "overflow", "packing",
                 "conversation_column", "roles")
#: data keys that mean nothing to SFT (classification's); rejected here when set
NON_SFT_DATA_KEYS = ("text_pair_column", "label_column", "augment", "balance")


def nondefault_data_keys(cfg: RunConfig, keys) -> list[str]:
    """Which of `keys` (fields of DataSection) the config sets to something other than their default."""
    out = []
    for key in keys:
        field = DataSection.model_fields.get(key)
        if field is None:
            continue
        default = field.get_default(call_default_factory=True)
        value = getattr(cfg.data, key)
        if hasattr(value, "model_dump"):
            value, default = value.model_dump(), default.model_dump()
        if value != default:
            out.append(f"data.{key}")
    return out


def reject_foreign_data_keys(cfg: RunConfig, keys, task: str, owner: str) -> None:
    """Raise ConfigError when keys that belong to another task are set (silently ignoring them misleads)."""
    bad = nondefault_data_keys(cfg, keys)
    if bad:
        raise ConfigError(f"{', '.join(bad)}: only used by the {owner} task, not by task.type '{task}'; remove "
                          f"{'it' if len(bad) == 1 else 'them'}")


class GenerationSettings(Section):
    max_new_tokens: int = Field(256, ge=1, description="Longest answer, in tokens (chat/generate default).")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature; 0 decodes greedily.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling: smallest token set with this probability.")
    repetition_penalty: float = Field(1.0, gt=0.0, description="Penalty > 1 discourages repeating tokens (1 = off).")


class CausalLMConfig(TaskConfig):
    type: Literal["causal_lm"] = "causal_lm"
    generation: GenerationSettings = Field(default_factory=GenerationSettings, description=(
        "Sampling defaults saved with the model for `tuneforge chat` and `generate` (flags override them)."))
    report_prompts: int = Field(4, ge=0, le=64, description=(
        "Held-out prompts answered by the base and the tuned model, side by side, in eval/report.md."))
    report_max_new_tokens: int = Field(128, ge=1, description="Longest answer in the report (greedy decoding).")
    compare_base: bool = Field(True, description=(
        "Also measure the base model's loss/perplexity and answers on the held-out split (LoRA-type methods "
        "switch the adapter off; others reload the base)."))


def _record_text(record) -> str:
    if isinstance(record, str):
        return record
    return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in record)


def sft_data_report(fmt: str, splits: dict[str, list | None], stats: dict, overflow: str, max_length: int) -> dict:
    """What the SFT data looks like, in the shape `data.report.write_report` renders: records, language mix
    and characters per split, turns and trained-token share, exact duplicate conversations inside train and
    training conversations that copy a held-out one (reported, never removed), and what `data.overflow` did."""
    from collections import Counter

    from tuneforge.data.text import detect_language, normalize

    def summary(records):
        if not records:
            return None
        texts = [_record_text(r) for r in records]
        chars = [len(t) for t in texts]
        user = [" ".join(m["content"] for m in r if m.get("role") == "user") if isinstance(r, list) else r
                for r in records]
        return {"rows": len(records), "classes": {},
                "languages": dict(Counter(detect_language(t) for t in user).most_common()),
                "chars": {"mean": round(sum(chars) / len(chars), 1), "max": max(chars)}}

    report: dict = {"task": "causal_lm", "format": fmt, "steps": []}
    for name, key in (("train", "before"), ("validation", "validation"), ("test", "test")):
        report[key] = summary(splits.get(name))
    conversations = {}
    for name, records in splits.items():
        if not records:
            continue
        turns = [sum(m.get("role") == "assistant" for m in r) if isinstance(r, list) else 1 for r in records]
        tokens, trained = stats.get(f"{name}_tokens", 0), stats.get(f"{name}_trained_tokens", 0)
        conversations[name] = {"records": len(records), "assistant_turns_mean": round(sum(turns) / len(turns), 2),
                               "trained_token_share": round(trained / tokens, 4) if tokens else None,
                               "truncated": stats.get(f"{name}_truncated", 0),
                               "dropped": stats.get(f"{name}_dropped", 0),
                               "no_target_left": stats.get(f"{name}_no_target_left", 0)}
    report["conversations"] = conversations
    train = splits.get("train") or []
    kept = len(train) - stats.get("train_dropped", 0) - stats.get("train_no_target_left", 0)
    report["after"] = {**(report["before"] or {}), "rows": kept}
    report["steps"].append({"step": f"overflow:{overflow}", "rows_before": len(train), "rows_after": kept,
                            "max_length": max_length, "truncated": stats.get("train_truncated", 0)})
    keys = [normalize(_record_text(r)) for r in train]
    groups = [g for g in Counter(keys).values() if g > 1]
    held = {normalize(_record_text(r)): name for name in ("validation", "test") for r in (splits.get(name) or [])}
    cross = [(i, held[k]) for i, k in enumerate(keys) if k in held]
    report["duplicates"] = {"train_duplicate_groups": len(groups), "train_duplicate_rows": sum(g - 1 for g in groups),
                            "conflicting_groups": 0, "cross_split_train_rows": len(cross), "removed": 0,
                            "cross": [{"train": _record_text(train[i]), "split": split, "kind": "exact",
                                       "similarity": 1.0, "other": _record_text(train[i])} for i, split in cross[:20]]}
    return report


@TASKS.register("causal_lm")
class CausalLMTask(Task):
    name = "causal_lm"
    Config = CausalLMConfig
    auto_class_name = "AutoModelForCausalLM"
    # dynamic int8 changed 63% of SmolLM2-135M's next-token choices (activation outliers); weight-only: none
    int8_scheme = "weight-only"
    default_metric = "loss"
    default_max_length = 1024
    metrics: ClassVar[dict[str, bool]] = {"loss": False, "perplexity": False}

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        reject_foreign_data_keys(cfg, NON_SFT_DATA_KEYS, "causal_lm", "classification")
        if cfg.data.format == "text" and (cfg.data.system_prompt or cfg.data.template != "auto"):
            raise ConfigError("data.system_prompt / data.template: not used with data.format 'text' "
                              "(plain continued pre-training has no chat template)")

    def head_modules(self, model: nn.Module) -> list[str]:
        # no new head: lm_head is pretrained (and tied to the embeddings), so LoRA must not train it in full
        return []

    # ---- data -------------------------------------------------------------------------------------------
    def _base_stop_ids(self) -> list[int]:
        from transformers import GenerationConfig

        from tuneforge.models.loader import resolve_model
        try:
            gen = GenerationConfig.from_pretrained(resolve_model(self.cfg.model.name, self.cfg.model.revision))
        except (OSError, ValueError):
            return []
        ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        return [int(i) for i in ids if i is not None]

    def _read(self, source: str, key: str = "data.train") -> tuple[str, list]:
        from tuneforge.data.sft_formats import parse_records
        from tuneforge.data.sources import read_table
        from tuneforge.data.templates import fill_variables

        d = self.cfg.data
        if source == "builtin:identity":
            missing = [k for k in ("name", "author") if k not in d.variables]
            if missing:
                raise ConfigError(f"builtin:identity needs data.variables.{missing[0]} (the new "
                                  f"{'name' if missing[0] == 'name' else 'maker'} of the model)")
        skipped: list | None = [] if d.bad_records == "skip" else None
        numbers: list = []
        fmt, records = parse_records(read_table(source, key), d.format, source,
                                     conversation_column=d.conversation_column, text_column=d.text_column,
                                     roles=d.roles, skipped=skipped, numbers=numbers)
        if numbers:
            log.warning("%s: %d fields held a number instead of text and were trained as its text (first: %s)",
                        source, len(numbers), numbers[0])
        if skipped:
            print(f"tuneforge: {source}: data.bad_records=skip: left out {len(skipped)} of "
                  f"{len(skipped) + len(records)} records that cannot be used (first: {skipped[0][1]}); "
                  f"all are listed in the run's data/report.md", file=sys.stderr, flush=True)
            self.skipped_records = getattr(self, "skipped_records", []) + [
                {"source": source, "record": n, "problem": msg} for n, msg in skipped]
        if not records:
            raise DataError(f"{source}: no usable records (all {len(skipped or [])} were left out by "
                            f"data.bad_records=skip)")
        # placeholders are always filled: without data.variables a {{name}} would be trained as literal text
        if fmt == "text":
            records = [fill_variables(t, d.variables, f"{source}: record {n}") for n, t in enumerate(records, 1)]
        else:
            records = [[{**m, "content": fill_variables(m["content"], d.variables, f"{source}: record {n}")}
                        for m in msgs] for n, msgs in enumerate(records, 1)]
        return fmt, records

    def _split(self, records: list, frac: float, rng: random.Random) -> tuple[list, list]:
        if frac <= 0 or len(records) < 2:
            return records, []
        idx = list(range(len(records)))
        rng.shuffle(idx)
        k = max(1, int(round(frac * len(records))))
        held = set(idx[:k])
        return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]

    def prepare(self, tokenizer) -> Prepared:
        from tuneforge.data.templates import fill_variables, resolve_template

        d = self.cfg.data
        seed = d.split.seed if d.split.seed is not None else self.cfg.train.seed
        rng = random.Random(seed)
        fmt, train = self._read(d.train)
        val = self._read(d.validation, "data.validation")[1] if d.validation else None
        test = self._read(d.test, "data.test")[1] if d.test else None
        if test is None:
            train, test = self._split(train, d.split.test, rng)
        if val is None:
            train, val = self._split(train, d.split.validation / (1.0 - (d.split.test if not d.test else 0.0)), rng)
        if d.max_train_samples and d.max_train_samples < len(train):
            train = rng.sample(train, d.max_train_samples)
        if not train:
            raise DataError(f"{d.train}: no training records left after splitting")

        if tokenizer.pad_token_id is None:  # labels are built explicitly, so padding with eos is harmless
            tokenizer.pad_token = tokenizer.eos_token
        self.system_prompt = fill_variables(d.system_prompt, d.variables, "data.system_prompt") \
            if d.system_prompt else None
        self.chat = None
        if fmt != "text" or tokenizer.chat_template:
            try:
                self.chat = resolve_template(tokenizer, d.template, self._base_stop_ids())
            except ConfigError:
                if fmt != "text":
                    raise
            if self.chat is not None and self.chat.problems:
                msg = "chat template check failed: " + "; ".join(self.chat.problems)
                if fmt != "text" and not self.force:
                    raise ConfigError(msg + " (tuneforge train --force trains anyway)")
                print(f"tuneforge: warning: {msg}", file=sys.stderr, flush=True)
            if self.chat is not None:
                tokenizer.chat_template = self.chat.jinja  # saved with the model: chat uses what training used
        self.format = fmt
        self.report_conversations = [c for c in (test or val or [])
                                     if isinstance(c, list)][: self.cfg.task.report_prompts]

        stats: dict = {}
        enc = lambda recs, name: None if not recs else self._encode(recs, tokenizer, name, stats)
        train_ds, val_ds, test_ds = enc(train, "train"), enc(val, "validation"), enc(test, "test")
        if train_ds is None:
            raise DataError(f"{d.train}: no training example is left after data.overflow={d.overflow}")
        info = {"format": fmt, "template": self.chat.name if self.chat else None,
                "end_of_turn_token": self.chat.end_token if self.chat else None,
                "stop_token_ids": self.stop_token_ids(tokenizer), "system_prompt": self.system_prompt,
                "pad_token_id": tokenizer.pad_token_id,
                "sizes": {"train": len(train), "validation": len(val or []), "test": len(test or [])},
                "overflow": {"policy": d.overflow, **{k: v for k, v in stats.items()
                                                       if k != "example" and not k.endswith(("_lengths", "_tokens"))}},
                "example": stats.get("example")}
        info["data_report"] = sft_data_report(fmt, {"train": train, "validation": val, "test": test}, stats,
                                              d.overflow, max_length=d.max_length)
        if getattr(self, "skipped_records", None):
            info["data_report"]["bad_records"] = {"policy": "skip", "records": self.skipped_records}
            info["skipped_records"] = len(self.skipped_records)
        self.lengths = {k: stats[f"{k}_lengths"] for k in ("train", "validation", "test") if f"{k}_lengths" in stats}
        if d.packing:
            train_ds, info["packing"] = self._pack(train_ds)
            info["efficiency"] = {"packing_rows": info["packing"]["rows"],
                                  "padding_fraction_unpacked": info["packing"]["padding_fraction_unpacked"],
                                  "padding_fraction_packed": info["packing"]["padding_fraction_packed"]}
        else:
            from tuneforge.data.packing import padding_fraction
            pf = padding_fraction(train_ds["length"], self.cfg.train.batch_size, self.cfg.train.group_by_length, seed)
            info["efficiency"] = {"padding_fraction": round(pf, 4)}
        if stats.get("example"):
            log.info("first training example, trained tokens in [[...]]:\n%s", stats["example"])
        self.info = info
        return Prepared(train=train_ds, validation=val_ds, test=test_ds, info=info)

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        from tuneforge.data.report import write_report

        name = prepared.info.get("template") or prepared.info.get("format")
        write_report(out_dir, prepared.info["data_report"], getattr(self, "lengths", None), self.cfg.data.max_length,
                     title=f"SFT data report ({prepared.info.get('format')} records, template {name}; "
                           f"lengths in tokens of the whole templated conversation)")

    def stop_token_ids(self, tokenizer) -> list[int]:
        if self.chat is not None and self.chat.stop_token_ids:
            return list(self.chat.stop_token_ids)
        return list(dict.fromkeys([tokenizer.eos_token_id] + self._base_stop_ids()))

    def _encode(self, records: list, tokenizer, split: str, stats: dict):
        import datasets

        from tuneforge.data.templates import Encoded, conversation_segments, encode_segments, label_view, IGNORE
        from tuneforge.generation import with_system

        d, max_len = self.cfg.data, self.cfg.data.max_length
        if self.format == "text":
            eos = tokenizer.eos_token_id
            ids_list = tokenizer(records, add_special_tokens=True)["input_ids"]
            encoded = [Encoded(ids + ([eos] if not ids or ids[-1] != eos else []),
                               ids + ([eos] if not ids or ids[-1] != eos else [])) for ids in ids_list]
        else:
            segs = []
            for n, msgs in enumerate(records, start=1):
                try:
                    segs.append(conversation_segments(tokenizer, self.chat, with_system(msgs, self.system_prompt)))
                except DataError as exc:
                    raise DataError(f"{split} record {n}: {exc}") from None
            encoded = encode_segments(tokenizer, segs, d.train_on_prompt)
            self._check_ends(encoded, tokenizer, split)
        stats[f"{split}_lengths"] = [len(e.input_ids) for e in encoded]  # before truncation
        keep, truncated, dropped, no_target = [], 0, 0, 0
        for e in encoded:
            if len(e.input_ids) > max_len:
                if d.overflow == "drop":
                    dropped += 1
                    continue
                e = Encoded(e.input_ids[:max_len], e.labels[:max_len], truncated=True)
                truncated += 1
            labels = [IGNORE] + e.labels[1:]  # the first token has no context to be predicted from
            if all(x == IGNORE for x in labels):
                no_target += 1
                continue
            keep.append(Encoded(e.input_ids, labels, e.truncated))
        for k, v in (("truncated", truncated), ("dropped", dropped), ("no_target_left", no_target)):
            stats[f"{split}_{k}"] = v
        stats[f"{split}_trained_tokens"] = sum(sum(x != IGNORE for x in e.labels) for e in keep)
        stats[f"{split}_tokens"] = sum(len(e.input_ids) for e in keep)
        if truncated or dropped or no_target:
            print(f"tuneforge: {split}: {truncated} examples truncated and {dropped} dropped at data.max_length="
                  f"{max_len} (data.overflow={d.overflow}); {no_target} left out with no answer token left",
                  file=sys.stderr, flush=True)
        if split == "train" and keep and "example" not in stats:
            stats["example"] = label_view(tokenizer, keep[0])
        if not keep:
            return None
        return datasets.Dataset.from_dict({"input_ids": [e.input_ids for e in keep],
                                           "labels": [e.labels for e in keep],
                                           "length": [len(e.input_ids) for e in keep]})

    def _check_ends(self, encoded, tokenizer, split: str) -> None:
        """Every assistant turn must end, token-wise, with the end-of-turn token generation stops on; a
        tokenizer that splits the end marker into pieces would teach a model that never stops."""
        end = self.chat.end_token_id
        if end is None:  # no end-of-turn token at all: already reported by the template check
            return
        for n, e in enumerate(encoded, start=1):
            bad = next((i for i in e.target_ends if e.input_ids[i] != end), None)
            if bad is None:
                continue
            tok = tokenizer.convert_ids_to_tokens(e.input_ids[bad])
            msg = (f"{split} record {n}: an assistant turn ends with the token {tok!r}, not with the end-of-turn "
                   f"token {self.chat.end_token!r} that generation stops on")
            if not self.force:
                raise ConfigError(f"chat template check failed: {msg} (tuneforge train --force trains anyway)")
            print(f"tuneforge: warning: {msg}", file=sys.stderr, flush=True)
            return

    def _pack(self, ds):
        import datasets

        from tuneforge.data.packing import pack_examples, padding_fraction

        t = self.cfg.train
        cols = pack_examples(ds["input_ids"], ds["labels"], self.cfg.data.max_length)
        before = padding_fraction(ds["length"], t.batch_size, t.group_by_length, t.seed)
        after = padding_fraction(cols["length"], t.batch_size, t.group_by_length, t.seed)
        info = {"examples": len(ds), "rows": len(cols["length"]),
                "padding_fraction_unpacked": round(before, 4), "padding_fraction_packed": round(after, 4)}
        print(f"tuneforge: packing: {len(ds)} examples -> {info['rows']} rows of <= {self.cfg.data.max_length} "
              f"tokens; padding {100 * before:.1f}% -> {100 * after:.1f}% of batch tokens",
              file=sys.stderr, flush=True)
        cols.pop("n_examples")
        return datasets.Dataset.from_dict(cols), info

    # ---- training hooks ---------------------------------------------------------------------------------
    def collator(self, tokenizer):
        from tuneforge.data.packing import SFTCollator

        packed = SFTCollator(tokenizer.pad_token_id, packed=True)
        plain = SFTCollator(tokenizer.pad_token_id, packed=False)
        # packed training rows carry position_ids; evaluation rows are never packed
        return lambda features: (packed if "position_ids" in features[0] else plain)(features)

    def preprocess_logits(self, prepared: Prepared):
        """Reduce each batch's logits to per-row (summed NLL, target count): the full vocabulary logits of a
        whole split would not fit in memory."""
        import torch
        import torch.nn.functional as F

        def fn(logits, labels):
            if isinstance(logits, tuple):
                logits = logits[0]
            # prompt tuning prepends virtual tokens to the sequence: the logits of the real tokens are the last
            logits = logits[:, -labels.size(1):]
            shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
            nll = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                                  ignore_index=-100, reduction="none").view(shift_labels.shape)
            return torch.stack([nll.sum(1), (shift_labels != -100).sum(1).float()], dim=1)
        return fn

    def compute_metrics(self, prepared: Prepared):
        import numpy as np

        def fn(eval_pred):
            p = np.asarray(eval_pred.predictions, dtype=np.float64)
            tokens = p[:, 1].sum()
            nll = p[:, 0].sum() / max(tokens, 1.0)
            return {"perplexity": float(math.exp(min(nll, 50.0)))}
        return fn

    def use_fused_loss(self, model: nn.Module) -> str | None:
        """Training loss from the hidden states through the chunked linear + cross-entropy (evaluation keeps
        the model's own forward, whose logits the metrics need)."""
        from tuneforge.kernels.chunked_ce import chunked_loss_unsupported, use_chunked_loss

        reason = chunked_loss_unsupported(model)
        if reason is None:
            use_chunked_loss(model)
        return reason

    # ---- evaluation -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _base_model(self, model):
        """The base model for comparison: adapters switched off when the method has them, else a fresh copy."""
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                yield model
            return
        from transformers import AutoModelForCausalLM

        from tuneforge.models.loader import load_model, resolve_model
        base = load_model(resolve_model(self.cfg.model.name, self.cfg.model.revision), AutoModelForCausalLM,
                          self.cfg.model.dtype, self.cfg.model.trust_remote_code)
        base.to(next(model.parameters()).device).eval()
        try:
            yield base
        finally:
            del base

    def final_evaluation(self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict) -> dict:
        from tuneforge.evaluation.lm import lm_loss, write_lm_report
        from tuneforge.generation import ChatModel, generate

        split_name = "test" if prepared.test is not None else "validation"
        data = prepared.test if prepared.test is not None else prepared.validation
        model, tok = trainer.model, trainer.processing_class
        model.eval()
        bs = self.cfg.train.eval_batch_size or 2 * self.cfg.train.batch_size
        collate = self.collator(tok)
        result: dict = {}
        prompts = [c[:max(i for i, m in enumerate(c) if m["role"] == "assistant")] for c in self.report_conversations]
        refs = [c[max(i for i, m in enumerate(c) if m["role"] == "assistant")]["content"]
                for c in self.report_conversations]
        settings = {"temperature": 0.0, "max_new_tokens": self.cfg.task.report_max_new_tokens}
        stops = prepared.info["stop_token_ids"]
        make = lambda m: ChatModel(m, tok, self.chat.jinja if self.chat else None, self.system_prompt, stops)
        tuned_answers = generate(make(model), prompts, settings) if prompts else []
        base_answers = None
        if data is not None:
            result.update(lm_loss(model, data, collate, bs))
        if self.cfg.task.compare_base and (data is not None or prompts):
            with self._base_model(model) as base:
                if data is not None:
                    result.update({f"base_{k}": v for k, v in lm_loss(base, data, collate, bs).items()
                                   if k in ("loss", "perplexity")})
                base_answers = generate(make(base), prompts, settings) if prompts else None
        if tuned_answers:
            result["stopped_by_eos"] = round(sum(a["finish_reason"] == "stop" for a in tuned_answers)
                                             / len(tuned_answers), 4)
        if base_answers:
            result["base_stopped_by_eos"] = round(sum(a["finish_reason"] == "stop" for a in base_answers)
                                                  / len(base_answers), 4)
        info = {k: v for k, v in prepared.info.items() if k != "example"}
        metrics = {"validation": val_metrics}
        if data is None:
            log.warning("no held-out split: no evaluation beyond the training loss")
        elif split_name == "test":
            metrics["test"] = result
        else:
            metrics["validation"] = {**val_metrics, **result}
        metrics["data"] = info
        write_lm_report(Path(eval_dir), metrics, split_name if data is not None else None,
                        prompts, refs, tuned_answers, base_answers, prepared.info.get("example"))
        return metrics

    # ---- artefacts --------------------------------------------------------------------------------------
    def metadata(self, prepared: Prepared) -> dict:
        i = prepared.info
        return {"format": i["format"], "template": i["template"], "end_of_turn_token": i["end_of_turn_token"],
                "system_prompt": i["system_prompt"], "stop_token_ids": i["stop_token_ids"],
                "generation": self.cfg.task.generation.model_dump(), "max_length": self.cfg.data.max_length}

    def save_extras(self, model_dir: str, prepared: Prepared) -> None:
        """generation_config.json that stops on the template's end-of-turn token, for any loader of model/."""
        from transformers import GenerationConfig

        g = self.cfg.task.generation
        stops = prepared.info["stop_token_ids"]
        gen = GenerationConfig(eos_token_id=stops if len(stops) > 1 else stops[0],
                               pad_token_id=prepared.info.get("pad_token_id", stops[0]),
                               do_sample=g.temperature > 0, temperature=g.temperature if g.temperature > 0 else None,
                               top_p=g.top_p if g.temperature > 0 else None, max_new_tokens=g.max_new_tokens,
                               repetition_penalty=g.repetition_penalty)
        gen.save_pretrained(model_dir)
