"""SFT records to training rows: conversations rendered with the chat template and tokenized with labels on
the assistant turns (or plain text for continued pre-training), cut or dropped at `max_length`, and packed
several to a row when asked. Counts of what happened go into `stats` for the data report."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tuneforge.errors import ConfigError, DataError


@dataclass
class EncodeSettings:
    fmt: str  # the record format (`text` for plain continued pre-training)
    chat: object | None  # the data.templates.ChatFormat, or None (no chat template)
    system_prompt: str | None
    max_length: int
    overflow: str  # data.overflow: truncate | drop
    train_on_prompt: bool
    force: bool  # tuneforge train --force: a template problem warns instead of failing


def encode_records(records: list, tokenizer, split: str, stats: dict, s: EncodeSettings):
    """Encode one split's records into a datasets.Dataset (input_ids, labels, length), or None when nothing is
    left. Raises DataError for a record the template cannot render, ConfigError when an assistant turn does
    not end with the end-of-turn token generation stops on (unless `s.force`)."""
    import datasets

    from tuneforge.data.templates import (
        IGNORE,
        Encoded,
        conversation_segments,
        encode_segments,
        label_view,
        with_system,
    )

    max_len = s.max_length
    if s.fmt == "text":
        eos = tokenizer.eos_token_id
        ids_list = tokenizer(records, add_special_tokens=True)["input_ids"]
        encoded = [
            Encoded(
                ids + ([eos] if not ids or ids[-1] != eos else []), ids + ([eos] if not ids or ids[-1] != eos else [])
            )
            for ids in ids_list
        ]
    else:
        segs = []
        for n, msgs in enumerate(records, start=1):
            try:
                segs.append(conversation_segments(tokenizer, s.chat, with_system(msgs, s.system_prompt)))
            except DataError as exc:
                raise DataError(f"{split} record {n}: {exc}") from None
        encoded = encode_segments(tokenizer, segs, s.train_on_prompt)
        check_ends(encoded, tokenizer, split, s.chat, s.force)
    stats[f"{split}_lengths"] = [len(e.input_ids) for e in encoded]  # before truncation
    keep, truncated, dropped, no_target, cut_up = [], 0, 0, 0, 0
    for e in encoded:
        parts = [e]
        if len(e.input_ids) > max_len:
            if s.overflow == "drop":
                dropped += 1
                continue
            if s.overflow == "split":  # plain text: consecutive pieces, every token kept
                parts = [
                    Encoded(e.input_ids[i : i + max_len], e.labels[i : i + max_len])
                    for i in range(0, len(e.input_ids), max_len)
                ]
                cut_up += 1
            else:
                parts = [Encoded(e.input_ids[:max_len], e.labels[:max_len], truncated=True)]
                truncated += 1
        for part in parts:
            labels = [IGNORE] + part.labels[1:]  # the first token has no context to be predicted from
            if all(x == IGNORE for x in labels):
                no_target += 1
                continue
            keep.append(Encoded(part.input_ids, labels, part.truncated))
    counts = (
        ("truncated", truncated),
        ("dropped", dropped),
        ("split", cut_up),
        ("no_target_left", no_target),
        ("examples", len(keep)),
    )
    for k, v in counts:
        stats[f"{split}_{k}"] = v
    stats[f"{split}_trained_tokens"] = sum(sum(x != IGNORE for x in e.labels) for e in keep)
    stats[f"{split}_tokens"] = sum(len(e.input_ids) for e in keep)
    if cut_up:
        print(
            f"tuneforge: {split}: {cut_up} texts longer than data.max_length={max_len} split into pieces "
            f"(data.overflow=split): {len(keep)} training examples",
            file=sys.stderr,
            flush=True,
        )
    if truncated or dropped or no_target:
        print(
            f"tuneforge: {split}: {truncated} examples truncated and {dropped} dropped at data.max_length="
            f"{max_len} (data.overflow={s.overflow}); {no_target} left out with no answer token left",
            file=sys.stderr,
            flush=True,
        )
    if split == "train" and keep and "example" not in stats:
        stats["example"] = label_view(tokenizer, keep[0])
    if not keep:
        return None
    return datasets.Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in keep],
            "labels": [e.labels for e in keep],
            "length": [len(e.input_ids) for e in keep],
        }
    )


def check_ends(encoded, tokenizer, split: str, chat, force: bool) -> None:
    """Every assistant turn must end, token-wise, with the end-of-turn token generation stops on; a
    tokenizer that splits the end marker into pieces would teach a model that never stops."""
    end = chat.end_token_id
    if end is None:  # no end-of-turn token at all: already reported by the template check
        return
    for n, e in enumerate(encoded, start=1):
        bad = next((i for i in e.target_ends if e.input_ids[i] != end), None)
        if bad is None:
            continue
        tok = tokenizer.convert_ids_to_tokens(e.input_ids[bad])
        msg = (
            f"{split} record {n}: an assistant turn ends with the token {tok!r}, not with the end-of-turn "
            f"token {chat.end_token!r} that generation stops on"
        )
        if not force:
            raise ConfigError(f"chat template check failed: {msg} (tuneforge train --force trains anyway)")
        print(f"tuneforge: warning: {msg}", file=sys.stderr, flush=True)
        return


def pack_dataset(ds, max_length: int, batch_size: int, group_by_length: bool, seed: int):
    """Pack the examples of `ds` into rows of up to `max_length` tokens; returns (dataset, packing info)."""
    import datasets

    from tuneforge.data.packing import pack_examples, padding_fraction

    cols = pack_examples(ds["input_ids"], ds["labels"], max_length)
    before = padding_fraction(ds["length"], batch_size, group_by_length, seed)
    after = padding_fraction(cols["length"], batch_size, group_by_length, seed)
    info = {
        "examples": len(ds),
        "rows": len(cols["length"]),
        "padding_fraction_unpacked": round(before, 4),
        "padding_fraction_packed": round(after, 4),
    }
    print(
        f"tuneforge: packing: {len(ds)} examples -> {info['rows']} rows of <= {max_length} "
        f"tokens; padding {100 * before:.1f}% -> {100 * after:.1f}% of batch tokens",
        file=sys.stderr,
        flush=True,
    )
    cols.pop("n_examples")
    return datasets.Dataset.from_dict(cols), info
