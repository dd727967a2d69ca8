"""Preparing the data of a preference run (tasks/preference.py): the pairs of every file read in their detected
format (data/preference_formats), placeholders filled, prompts over `data.max_prompt_length` treated as bad
records, data.train split where no file is given, and every split encoded (data/preference_encode) with its
data report. The reward task (tasks/reward.py) prepares its pairs here too, with its own encoding."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tuneforge.data.splits import data_seed
from tuneforge.errors import DataError
from tuneforge.tasks.base import Prepared
from tuneforge.tasks.sft_prepare import split_given

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig
    from tuneforge.data.preference_encode import PairSettings
    from tuneforge.data.templates import ChatFormat


@dataclass
class PreferenceState:
    """What preparation decided, for the later hooks: the chat template, stop tokens and held-out prompts."""

    fmt: str
    chat: ChatFormat
    system_prompt: str | None
    stop_token_ids: list[int]
    pad_token_id: int | None
    report_pairs: list[dict] = field(default_factory=list)  # held-out pairs whose prompts eval/report.md answers


def _fill(record: dict, variables: dict[str, str], where: str) -> dict:
    from tuneforge.data.templates import fill_variables

    return {
        k: [{**m, "content": fill_variables(m["content"], variables, where)} for m in v]
        if k == "prompt"
        else fill_variables(v, variables, where)
        if isinstance(v, str)
        else v
        for k, v in record.items()
    }


def unpair(records: list[dict]) -> list[dict]:
    """Pairs as KTO's unpaired answers: the chosen answer good, the rejected one bad (after splitting, so both
    answers of a pair stay in one split); unpaired records as they are."""
    return [r for r in records if "completion" in r] + [
        {"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
        for r in records
        if "chosen" in r
        for side in ("chosen", "rejected")
    ]


def _summary(records: list[dict] | None) -> dict | None:
    """A split in the shape data/report.py's splits table shows: pairs, prompt languages, mean characters."""
    from collections import Counter

    from tuneforge.data.text import detect_language

    if not records:
        return None
    users = [" ".join(m["content"] for m in r["prompt"] if m["role"] == "user") for r in records]
    answers = [sum(len(r.get(k, "")) for k in ("chosen", "rejected", "completion")) for r in records]
    chars = [len(u) + a for u, a in zip(users, answers)]
    return {
        "rows": len(records),
        "classes": {},
        "languages": dict(Counter(detect_language(u) for u in users).most_common()),
        "chars": {"mean": round(sum(chars) / len(chars), 1), "max": max(chars)},
    }


def report_records(records: list[dict], n: int) -> list[dict]:
    """The held-out prompts eval/report.md answers, each with its good answer (`chosen`)."""
    good = [r for r in records if r.get("label", True)]
    return [r if "chosen" in r else {"prompt": r["prompt"], "chosen": r["completion"]} for r in good][:n]


def read_pairs(
    cfg: RunConfig,
    source: str,
    key: str,
    tokenizer,
    s: PairSettings,
    skipped_out: list[dict],
    read: dict[str, int],
    margins: bool = False,
) -> tuple[str, list[dict]]:
    """The records of `source` (format, records): pairs, or unpaired answers (only task.loss kto reads them).
    Records that cannot be used, prompts over data.max_prompt_length
    included, raise a DataError naming the record, or with data.bad_records=skip are left out and appended to
    `skipped_out`; `read` gets the number of records the file held. `margins`: read a `margin` column into the
    pairs (the reward task)."""
    from tuneforge.data.columns import skip_hint
    from tuneforge.data.preference_encode import prompt_lengths
    from tuneforge.data.preference_formats import parse_preference_records
    from tuneforge.data.sources import read_table

    d = cfg.data
    frame = read_table(source, key)
    read[source] = len(frame)
    skipped: list | None = [] if d.bad_records == "skip" else None
    numbers: list = []
    kind, fmt, records = parse_preference_records(
        frame, d.format, source, roles=d.roles, skipped=skipped, numbers=numbers, margins=margins
    )
    if numbers:
        print(
            f"tuneforge: {source}: {len(numbers)} fields held a number instead of text and were trained as its text "
            f"(first: {numbers[0]})",
            file=sys.stderr,
            flush=True,
        )
    loss = getattr(cfg.task, "loss", None)  # tasks without task.loss (reward models) read pairs only
    if kind != "paired" and loss != "kto":
        needs = (
            f"task.loss {loss} needs pairs of a chosen and a rejected answer (task.loss: kto reads unpaired answers)"
            if loss
            else f"the {cfg.task.type} task needs pairs of a chosen and a rejected answer"
        )
        raise DataError(f"{source}: holds unpaired records (a prompt with one answer and a label); {needs}")
    left = {n for n, _ in skipped or []}
    numbers = [n for n in range(1, len(frame) + 1) if n not in left]  # each kept record's number in the file
    records = [_fill(r, d.variables, f"{source}: record {n}") for r, n in zip(records, numbers)]
    kept = []
    for r, n, length in zip(records, numbers, prompt_lengths(records, tokenizer, s)):
        if length <= s.max_prompt_length:
            kept.append(r)
            continue
        problem = (
            f"the prompt is {length} tokens, longer than data.max_prompt_length={s.max_prompt_length} (prompts "
            f"are never cut)"
        )
        if skipped is None:
            raise DataError(f"{source}: record {n}: {problem} {skip_hint()}")
        skipped.append((n, problem))
    if skipped:
        print(
            f"tuneforge: {source}: data.bad_records=skip: left out {len(skipped)} of {len(frame)} records that "
            f"cannot be used (first: {sorted(skipped)[0][1]}); all are listed in the run's data/report.md",
            file=sys.stderr,
            flush=True,
        )
        prefix = f"{source}: record "
        skipped_out.extend(
            {
                "source": source,
                "record": n,
                "problem": msg[len(prefix) :].split(": ", 1)[-1] if msg.startswith(prefix) else msg,
            }
            for n, msg in sorted(skipped)
        )
    if not kept:
        raise DataError(f"{source}: no usable preference records (all {len(frame)} were left out)")
    return fmt, kept


def prepare_pairs(
    cfg: RunConfig, tokenizer, s: PairSettings, state_of, encode=None, margins: bool = False
) -> Prepared[PreferenceState]:
    """Read, split and encode every split; `state_of(fmt)` builds the PreferenceState once the format is known.
    `encode(records, tokenizer, split, stats, s)`: how a split becomes rows (default: `encode_pairs`, KTO's
    `encode_unpaired`); `margins`: keep the data's `margin` column in the pairs (the reward task passes both)."""
    from tuneforge.data.preference_encode import encode_pairs, encode_unpaired

    d = cfg.data
    rng = random.Random(data_seed(cfg))
    skipped: list[dict] = []
    read: dict[str, int] = {}

    def read_file(source: str, key: str):
        return read_pairs(cfg, source, key, tokenizer, s, skipped, read, margins=margins)

    fmt, train = read_file(d.train, "data.train")
    val = read_file(d.validation, "data.validation")[1] if d.validation else None
    test = read_file(d.test, "data.test")[1] if d.test else None
    train, val, test = split_given(cfg, train, val, test, rng)
    unpaired = getattr(cfg.task, "loss", None) == "kto"
    if unpaired:
        train, val, test = unpair(train), unpair(val) if val else val, unpair(test) if test else test
    stats: dict = {}
    encode = encode or (encode_unpaired if unpaired else encode_pairs)
    encoded = {
        name: encode(rs or [], tokenizer, name, stats, s)
        for name, rs in (("train", train), ("validation", val), ("test", test))
    }
    state = state_of(fmt)
    state.report_pairs = report_records(test or val or [], getattr(cfg.task, "report_prompts", 0))
    sizes = {"train": len(train), "validation": len(val or []), "test": len(test or [])}
    truncated = {k: stats.get(f"{k}_truncated", 0) for k in sizes}
    if any(truncated.values()):
        print(
            f"tuneforge: {'answers' if unpaired else 'pairs with an answer'} cut at data.max_length={d.max_length}: "
            + ", ".join(f"{k} {v}" for k, v in truncated.items()),
            file=sys.stderr,
            flush=True,
        )
    report: dict = {
        "task": cfg.task.type,
        "format": fmt,
        "read": read,
        "before": _summary(train),
        "validation": _summary(val),
        "test": _summary(test),
        "pairs": {k: {"pairs": n, "truncated": truncated[k]} for k, n in sizes.items() if n},
        "unit": "answers" if unpaired else "pairs",
        "max_length": d.max_length,
        "max_prompt_length": s.max_prompt_length,
    }
    if skipped:
        report["bad_records"] = {"policy": "skip", "records": skipped}
    info = {
        "format": fmt,
        "template": state.chat.name if state.chat is not None else None,  # None: a reward model scoring text pairs
        "end_of_turn_token": state.chat.end_token if state.chat is not None else None,
        "stop_token_ids": state.stop_token_ids,
        "system_prompt": state.system_prompt,
        "pad_token_id": state.pad_token_id,
        "sizes": sizes,
        "truncated_pairs": truncated,
        "skipped_records": len(skipped),
        "trained_tokens": stats.get("train_trained_tokens", 0),
    }
    return Prepared(
        train=encoded["train"],
        validation=encoded["validation"],
        test=encoded["test"],
        sizes=sizes,
        state=state,
        report=report,
        held_out={"validation": list(val or []), "test": list(test or [])},
        lengths={k: stats[f"{k}_lengths"] for k in sizes if f"{k}_lengths" in stats},
        info=info,
    )
