"""GRPO data: prompts (and the other columns of each record, which the rewards read as fields) read from any SFT
format, checked, split and encoded as left-padded prompts for generation.

A record becomes `{"prompt": [messages ending with the user's turn], **fields}`:
- `prompt` format: the `data.prompt_column` holds a text (one user message) or a list of chat messages;
- `alpaca`: instruction + input is the user message (system and history kept); `output` stays a field;
- `sharegpt` / `messages`: the turns before the conversation's last assistant turn; that turn becomes the field
  `answer` unless the record has an `answer` column.
Prompts are never cut: one longer than `data.max_prompt_length` tokens (templated, generation prompt included) is a
bad record (`data.bad_records`), as is an empty prompt or one ending with an assistant turn."""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass, field
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.data.splits import data_seed
from tuneforge.errors import DataError
from tuneforge.tasks.base import Prepared
from tuneforge.tasks.sft_prepare import split_given

#: columns that are the prompt itself in some format, never passed to the rewards as fields
PROMPT_COLUMNS = ("instruction", "input", "system", "history", "conversations", "messages")


@dataclass
class GRPOState:
    """What preparation decided: the record format, the chat template, stop tokens, and the records of every split
    in one list (train, validation, test): a row's `index` is its record's position there (the rewards read its
    fields through it)."""

    fmt: str
    chat: Any  # data.templates.ChatFormat
    system_prompt: str | None
    stop_token_ids: list[int]
    pad_token_id: int
    records: list[dict] = field(default_factory=list)
    tokenizer: Any = None  # for decoding completions and token-counting rewards


def _plain(value: Any) -> Any:
    """A cell as a JSON value (numpy scalars and arrays to Python), NaN as None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def detect(columns: list[str], cfg: RunConfig) -> str:
    d = cfg.data
    cols = set(columns)
    if d.format != "auto":
        return d.format
    if d.prompt_column in cols:
        return "prompt"
    if "instruction" in cols:
        return "alpaca"
    conv = d.conversation_column or ("conversations" if "conversations" in cols else "messages")
    if conv in cols:
        return "conv"
    raise DataError(
        f"{d.train}: cannot tell the prompts' format from the columns ({', '.join(sorted(cols))}); expected "
        f"'{d.prompt_column}' (data.prompt_column), instruction/input (alpaca), conversations or messages; or set "
        f"data.format"
    )


def _record(row: dict, n: int, fmt: str, cfg: RunConfig, source: str) -> dict:
    from tuneforge.data.sft_formats import _conversation, _record, _roles, _text

    d = cfg.data
    where = f"{source}: record {n}"
    fields = {k: _plain(v) for k, v in row.items() if k not in PROMPT_COLUMNS and k != d.prompt_column}
    if fmt == "prompt":
        value = _plain(row.get(d.prompt_column))
        if isinstance(value, list):
            msgs = _conversation(value, f"{where}: field '{d.prompt_column}'", "role", "content", _roles(d.roles), None)
        else:
            msgs = [{"role": "user", "content": _text(value, f"{where}: field '{d.prompt_column}'")}]
    elif fmt == "alpaca":
        msgs = _record(
            {**row, "output": row.get("output") or "-"}, n, "alpaca", None, source, "text", _roles(d.roles), None
        )
        msgs = msgs[:-1]  # the placeholder answer: `output` stays a field
    else:
        conv = d.conversation_column or ("conversations" if "conversations" in row else "messages")
        first = row.get(conv)
        first = first.tolist() if hasattr(first, "tolist") else first
        kind = (
            "sharegpt"
            if isinstance(first, list) and first and isinstance(first[0], dict) and "from" in first[0]
            else "messages"
        )
        msgs = _record(row, n, kind, conv, source, "text", _roles(d.roles), None)
        if msgs and msgs[-1]["role"] == "assistant":
            fields.setdefault("answer", msgs[-1]["content"])
            msgs = msgs[:-1]
    if not msgs or msgs[-1]["role"] != "user":
        raise DataError(f"{where}: the prompt must end with a user turn (nothing for the model to answer)")
    if "prompt" in fields:
        fields.pop("prompt")
    return {"prompt": msgs, **fields}


def read_prompts(cfg: RunConfig, source: str, key: str, skipped_out: list, read: dict) -> tuple[str, list[dict]]:
    """(format, records) of `source`; malformed records raise a DataError naming the record and data.bad_records,
    or (skip) are left out and appended to `skipped_out`."""
    from tuneforge.data.columns import skip_hint
    from tuneforge.data.sources import read_table
    from tuneforge.data.templates import fill_variables

    d = cfg.data
    frame = read_table(source, key)
    read[source] = len(frame)
    fmt = detect(list(map(str, frame.columns)), cfg)
    records = []
    for n, row in enumerate(frame.to_dict("records"), start=1):
        try:
            r = _record(row, n, fmt, cfg, source)
            r["prompt"] = [
                {**m, "content": fill_variables(m["content"], d.variables, f"{source}: record {n}")}
                for m in r["prompt"]
            ]
        except DataError as exc:
            if d.bad_records != "skip":
                raise DataError(f"{exc} {skip_hint()}") from None
            skipped_out.append({"source": source, "record": n, "problem": str(exc)})
            continue
        r["_n"] = n
        records.append(r)
    if not records:
        raise DataError(f"{source}: no usable prompts (every record was left out by data.bad_records=skip)")
    return ("conv" if fmt == "conv" else fmt), records


def prompt_ids(records: list[dict], tokenizer, chat, system_prompt: str | None) -> list[list[int]]:
    """Each record's prompt templated (generation prompt included) and tokenized."""
    from tuneforge.data.templates import render, with_system

    texts = [
        render(tokenizer, chat.jinja, with_system(r["prompt"], system_prompt), add_generation_prompt=True)
        for r in records
    ]
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def prepare_prompts(cfg: RunConfig, tokenizer, chat, system_prompt, state_of) -> Prepared[GRPOState]:
    """Read, check (prompt length), split and encode every split. Rows: `prompt_ids` and `index` (the record's
    position in GRPOState.records, through which the rewards read its fields)."""
    import datasets

    from tuneforge.data.columns import skip_hint
    from tuneforge.tasks.preference_prepare import _summary

    d = cfg.data
    limit = d.max_prompt_length
    skipped: list[dict] = []
    read: dict[str, int] = {}

    def read_file(source: str, key: str) -> tuple[str, list[dict]]:
        fmt, records = read_prompts(cfg, source, key, skipped, read)
        kept = []
        for r, ids in zip(records, prompt_ids(records, tokenizer, chat, system_prompt)):
            if len(ids) <= limit:
                kept.append(r)
                continue
            problem = f"the prompt is {len(ids)} tokens, longer than data.max_prompt_length={limit} (never cut)"
            if d.bad_records != "skip":
                raise DataError(f"{source}: record {r['_n']}: {problem} {skip_hint()}")
            skipped.append({"source": source, "record": r["_n"], "problem": problem})
        if not kept:
            raise DataError(f"{source}: no prompt fits data.max_prompt_length={limit}")
        return fmt, kept

    fmt, train = read_file(d.train, "data.train")
    val = read_file(d.validation, "data.validation")[1] if d.validation else None
    test = read_file(d.test, "data.test")[1] if d.test else None
    train, val, test = split_given(cfg, train, val, test, random.Random(data_seed(cfg)))
    splits = {"train": train, "validation": val or [], "test": test or []}
    for rs in splits.values():
        for r in rs:
            r.pop("_n", None)
    if skipped:
        print(
            f"tuneforge: data.bad_records=skip: left out {len(skipped)} prompt records "
            f"(first: {skipped[0]['problem']}); all are listed in the run's data/report.md",
            file=sys.stderr,
            flush=True,
        )
    encoded, lengths, offset = {}, {}, 0
    for name, rs in splits.items():
        ids = prompt_ids(rs, tokenizer, chat, system_prompt)
        lengths[name] = [len(x) for x in ids]
        index = list(range(offset, offset + len(rs)))
        offset += len(rs)
        encoded[name] = (
            datasets.Dataset.from_dict({"prompt_ids": ids, "index": index, "length": lengths[name]}) if rs else None
        )
    state = state_of(fmt)
    state.records = [r for rs in splits.values() for r in rs]
    sizes = {k: len(v) for k, v in splits.items()}
    report: dict = {
        "task": cfg.task.type,
        "format": fmt,
        "read": read,
        "before": _summary(train),
        "validation": _summary(val),
        "test": _summary(test),
        "max_length": d.max_length,
        "max_prompt_length": limit,
    }
    if skipped:
        report["bad_records"] = {"policy": "skip", "records": skipped}
    info = {
        "format": fmt,
        "template": chat.name,
        "end_of_turn_token": chat.end_token,
        "stop_token_ids": state.stop_token_ids,
        "system_prompt": system_prompt,
        "pad_token_id": state.pad_token_id,
        "sizes": sizes,
        "skipped_records": len(skipped),
    }
    return Prepared(
        train=encoded["train"],
        validation=encoded["validation"],
        test=encoded["test"],
        sizes=sizes,
        state=state,
        report=report,
        held_out={"validation": list(val or []), "test": list(test or [])},
        lengths={k: v for k, v in lengths.items() if v},
        info=info,
    )


class PromptCollator:
    """Batches of prompts, left-padded for generation: `input_ids`, `attention_mask`, and `index` (row positions)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["prompt_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            x = f["prompt_ids"]
            ids[i, width - len(x) :] = torch.as_tensor(x)
            mask[i, width - len(x) :] = 1
        index = torch.tensor([f["index"] for f in features])
        # `labels` too: the Trainer evaluates through the task's loss only for batches that have labels
        return {"input_ids": ids, "attention_mask": mask, "index": index, "labels": index.clone()}
