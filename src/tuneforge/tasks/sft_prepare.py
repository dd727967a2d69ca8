"""Preparing the data of a causal LM run (tasks/causal_lm.py): reading the records of every split and splitting
data.train where no file is given (`read_split`), the state preparation hands to the later hooks (`SFTState`),
and the encoded splits put together with their data report, packing and padding figures (`assemble`; sequence
distillation re-assembles with the teacher's answers). Parsing, templating and encoding are in data/."""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuneforge.data.splits import data_seed
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.base import Prepared

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig
    from tuneforge.data.templates import ChatFormat

log = logging.getLogger("tuneforge")


@dataclass
class Records:
    """Read and split, before templating: the records of each split in the task's record format."""

    fmt: str
    train: list
    validation: list | None
    test: list | None
    skipped: list[dict] = field(default_factory=list)


@dataclass
class SFTState:
    """What preparation decided, for the later hooks: the record format, the chat template and stop tokens."""

    fmt: str
    chat: ChatFormat | None  # None: plain text
    system_prompt: str | None
    stop_token_ids: list[int]
    pad_token_id: int | None
    report_conversations: list = field(default_factory=list)  # held-out prompts for eval/report.md
    example: str | None = None  # the first training example with its trained tokens marked
    records: Records | None = None  # the Records the splits were encoded from (sequence distillation)


def read_records(
    cfg: RunConfig, source: str, key: str = "data.train", skipped_out: list | None = None
) -> tuple[str, list]:
    """The records of `source` in their detected format, placeholders filled: (format, records). Records left out
    by data.bad_records=skip are appended to `skipped_out`. Raises DataError, ConfigError."""
    from tuneforge.data.sft_formats import parse_records
    from tuneforge.data.sources import read_table
    from tuneforge.data.templates import fill_variables

    d = cfg.data
    if source == "builtin:identity":
        missing = [k for k in ("name", "author") if k not in d.variables]
        if missing:
            raise ConfigError(
                f"builtin:identity needs data.variables.{missing[0]} (the new "
                f"{'name' if missing[0] == 'name' else 'maker'} of the model)"
            )
    skipped: list | None = [] if d.bad_records == "skip" else None
    numbers: list = []
    fmt, records = parse_records(
        read_table(source, key),
        d.format,
        source,
        conversation_column=d.conversation_column,
        text_column=d.text_column,
        roles=d.roles,
        skipped=skipped,
        numbers=numbers,
    )
    if numbers:
        log.warning(
            "%s: %d fields held a number instead of text and were trained as its text (first: %s)",
            source,
            len(numbers),
            numbers[0],
        )
    if skipped:
        print(
            f"tuneforge: {source}: data.bad_records=skip: left out {len(skipped)} of "
            f"{len(skipped) + len(records)} records that cannot be used (first: {skipped[0][1]}); "
            f"all are listed in the run's data/report.md",
            file=sys.stderr,
            flush=True,
        )
        if skipped_out is not None:
            skipped_out.extend({"source": source, "record": n, "problem": msg} for n, msg in skipped)
    if not records:
        raise DataError(
            f"{source}: no usable records (all {len(skipped or [])} were left out by data.bad_records=skip)"
        )
    # placeholders are always filled: without data.variables a {{name}} would be trained as literal text
    if fmt == "text":
        records = [fill_variables(t, d.variables, f"{source}: record {n}") for n, t in enumerate(records, 1)]
    else:
        records = [
            [{**m, "content": fill_variables(m["content"], d.variables, f"{source}: record {n}")} for m in msgs]
            for n, msgs in enumerate(records, 1)
        ]
    return fmt, records


def split_records(records: list, frac: float, rng: random.Random) -> tuple[list, list]:
    """(rest, part): `frac` of `records` (at least one) held out at random; none from fewer than two records."""
    if frac <= 0 or len(records) < 2:
        return records, []
    idx = list(range(len(records)))
    rng.shuffle(idx)
    k = max(1, int(round(frac * len(records))))
    held = set(idx[:k])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def read_split(cfg: RunConfig) -> Records:
    """Read the records of every split and split data.train where no file is given. Raises DataError."""
    d = cfg.data
    rng = random.Random(data_seed(cfg))
    skipped: list[dict] = []
    fmt, train = read_records(cfg, d.train, skipped_out=skipped)
    val = read_records(cfg, d.validation, "data.validation", skipped)[1] if d.validation else None
    test = read_records(cfg, d.test, "data.test", skipped)[1] if d.test else None
    train, val, test = split_given(cfg, train, val, test, rng)
    return Records(fmt, train, val, test, skipped)


def split_given(cfg: RunConfig, train: list, val: list | None, test: list | None, rng: random.Random):
    """(train, validation, test): the splits no file gave held out of data.train (data.split), then
    data.max_train_samples drawn. Raises DataError when no training record is left."""
    d = cfg.data
    if test is None:
        train, test = split_records(train, d.split.test, rng)
    if val is None:
        train, val = split_records(train, d.split.validation / (1.0 - (d.split.test if not d.test else 0.0)), rng)
    if d.max_train_samples and d.max_train_samples < len(train):
        train = rng.sample(train, d.max_train_samples)
    if not train:
        raise DataError(f"{d.train}: no training records left after splitting")
    return train, val, test


def assemble(
    cfg: RunConfig, train_ds: Any, val_ds: Any, test_ds: Any, recs: Records, state: SFTState, stats: dict
) -> Prepared[SFTState]:
    """The encoded splits (`stats`: what encoding counted) as `Prepared`, with the data report, the training
    split packed (data.packing) and the padding figures for efficiency.json."""
    from tuneforge.data.packing import padding_fraction
    from tuneforge.data.sft_encode import pack_dataset
    from tuneforge.data.sft_report import sft_data_report

    d, t = cfg.data, cfg.train
    train, val, test = recs.train, recs.validation, recs.test
    info = {
        "format": state.fmt,
        "template": state.chat.name if state.chat else None,
        "end_of_turn_token": state.chat.end_token if state.chat else None,
        "stop_token_ids": state.stop_token_ids,
        "system_prompt": state.system_prompt,
        "pad_token_id": state.pad_token_id,
        "sizes": {"train": len(train), "validation": len(val or []), "test": len(test or [])},
        "overflow": {
            "policy": d.overflow,
            **{k: v for k, v in stats.items() if k != "example" and not k.endswith(("_lengths", "_tokens"))},
        },
    }
    report = sft_data_report(
        state.fmt, {"train": train, "validation": val, "test": test}, stats, d.overflow, max_length=d.max_length
    )
    info["data_report"] = report
    if recs.skipped:
        report["bad_records"] = {"policy": "skip", "records": recs.skipped}
        info["skipped_records"] = len(recs.skipped)
    if d.packing:
        train_ds, info["packing"] = pack_dataset(train_ds, d.max_length, t.batch_size, t.group_by_length, t.seed)
        efficiency = {
            "packing_rows": info["packing"]["rows"],
            "padding_fraction_unpacked": info["packing"]["padding_fraction_unpacked"],
            "padding_fraction_packed": info["packing"]["padding_fraction_packed"],
        }
    else:
        pf = padding_fraction(train_ds["length"], t.batch_size, t.group_by_length, data_seed(cfg))
        efficiency = {"padding_fraction": round(pf, 4)}
    info["efficiency"] = efficiency
    return Prepared(
        train=train_ds,
        validation=val_ds,
        test=test_ds,
        sizes=info["sizes"],
        state=state,
        report=report,
        held_out={"validation": list(val or []), "test": list(test or [])},
        lengths={k: stats[f"{k}_lengths"] for k in ("train", "validation", "test") if f"{k}_lengths" in stats},
        efficiency=efficiency,
        info=info,
    )
