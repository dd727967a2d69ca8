"""`tuneforge data inspect` and `tuneforge data prepare` as public functions: the same reading, splitting,
cleaning and augmentation a training run does, without training."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tuneforge.errors import ConfigError, ModelError, TuneforgeError

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

log = logging.getLogger("tuneforge")
CONFIG_SUFFIXES = (".yaml", ".yml")
#: keys that stop a second pass from cleaning/augmenting data that `data prepare` already prepared
REUSE_OVERRIDES = (
    "data.clean.dedup=none",
    "data.clean.label_noise=none",
    "data.augment.enabled=false",
    "data.balance.sampling=none",
)


def config_for(source: str, overrides: Iterable[str] = ()):
    """A RunConfig from a YAML config, or, for a data file, the default classification config reading it.

    Raises:
        ConfigError: invalid config or overrides; a task without data preparation.
    """
    from tuneforge.config import load_config

    if str(source).lower().endswith(CONFIG_SUFFIXES):
        cfg = load_config(source, list(overrides), environment=False)  # inspects data: trains nothing
    else:
        cfg = load_config(raw={"data": {"train": str(source)}}, overrides=list(overrides))
        cfg.output.name = Path(str(source)).stem.split(":")[-1]
    return cfg


def _frames(cfg: RunConfig):
    from tuneforge.registry import TASKS

    task = TASKS.get(cfg.task.type)(cfg)
    if not task.prepares_tables:
        raise ConfigError(
            f"task.type: '{cfg.task.type}' has no data preparation to inspect; "
            f"`tuneforge data prepare` supports classification configs (`data inspect` takes any)"
        )
    return task.prepare_frames()


def _token_lengths(cfg: RunConfig, frames: dict[str, pd.DataFrame | None]) -> tuple[dict, str, dict]:
    """Token lengths per split with the config's tokenizer (whitespace words when it cannot be loaded), the unit,
    and per split with Chinese text: its Han characters and the tokens of the texts that hold them (the texts'
    own tokens, without the special tokens the tokenizer adds)."""
    from tuneforge.data.text import chinese_stats
    from tuneforge.models.loader import load_tokenizer, resolve_model

    d = cfg.data
    try:
        tok = load_tokenizer(resolve_model(cfg.model.name, cfg.model.revision), cfg.model.trust_remote_code)
        unit = f"tokens of {cfg.model.name}"
    except (ModelError, TuneforgeError) as exc:
        log.warning("token lengths in whitespace words: the tokenizer could not be loaded (%s)", exc)
        tok, unit = None, "whitespace words (tokenizer unavailable)"
    out, chinese = {}, {}
    for name, df in frames.items():
        if df is None or len(df) == 0:
            continue
        texts = df[d.text_column].astype(str).tolist()
        pairs = df[d.text_pair_column].astype(str).tolist() if d.text_pair_column else None
        if tok is None:
            out[name] = [
                len(t.split()) + (len(p.split()) if pairs else 0) for t, p in zip(texts, pairs or [""] * len(texts))
            ]
        else:
            # untruncated, to count what max_length would cut
            ids = tok(texts, pairs, truncation=False, verbose=False)["input_ids"]
            out[name] = [len(x) for x in ids]
            extra = tok.num_special_tokens_to_add(pair=pairs is not None)
            joined = [t + (p or "") for t, p in zip(texts, pairs or [""] * len(texts))]
            stats = chinese_stats(joined, [len(x) - extra for x in ids])
            if stats:
                chinese[name] = stats
    return out, unit, chinese


def guess_file_columns(cfg: RunConfig, source: str, overrides: Iterable[str] = ()) -> list[str]:
    """For a data file (not a YAML config) without the configured text/label columns and without
    data.text_column / data.label_column overrides: guess them (`columns.guess_columns`), set them on `cfg`,
    and return one line per guess saying what was chosen and how to choose another."""
    from tuneforge.data.columns import guess_columns
    from tuneforge.data.sources import read_table
    from tuneforge.registry import TASKS

    if str(source).lower().endswith(CONFIG_SUFFIXES) or not TASKS.get(cfg.task.type).prepares_tables:
        return []
    given = {o.split("=", 1)[0].strip() for o in overrides}
    d = cfg.data
    df = read_table(d.train, "data.train")
    guesses = guess_columns(df, d.text_column, d.label_column)
    notes = []
    for key, (column, why) in guesses.items():
        if key in given:
            continue
        attr = key.split(".", 1)[1]
        before = getattr(d, attr)
        setattr(d, attr, str(column))
        notes.append(
            f"no column '{before}' in {d.train}: using '{column}' as {key} ({why}); "
            f"set {key}=<column> to choose another"
        )
    return notes


def inspect_data(
    source: str, overrides: Iterable[str] = (), out_dir: str | None = None, notes: list | None = None
) -> Path:
    """Write a data report (report.md, report.json, PNGs) for a config's data or a data file.

    Label-noise detection runs even when the config turns it off (as `report`: nothing is changed).

    Args:
        source: a YAML run config or a data file / builtin data set.
        overrides: `key=value` config overrides (for a data file e.g. `data.text_column=review`).
        out_dir: where to write; default `data-report-<name>`.

    Returns:
        The path of report.md.

    Raises:
        ConfigError, DataError, ModelError: bad config, unreadable data, missing resources.

    For a data file without the default `text`/`label` columns the text column (the longest free text) and
    the label column (a low-cardinality one) are guessed; what was chosen is appended to `notes` when it is a
    list (else printed to stderr) and written into report.md.
    """
    cfg = config_for(source, overrides)
    guessed = guess_file_columns(cfg, source, overrides)
    if notes is not None:
        notes.extend(guessed)
    else:
        for line in guessed:
            print(f"tuneforge: {line}", file=sys.stderr, flush=True)
    from tuneforge.registry import TASKS

    # a template problem is reported (as a warning), not a reason to stop inspecting
    task = TASKS.get(cfg.task.type)(cfg, force=True)
    out = Path(out_dir or f"data-report-{cfg.output.name or 'data'}")
    if not task.prepares_tables:
        # tasks without a table pipeline (SFT, images): their own data report, from the encoded splits
        from tuneforge.models.loader import resolve_model

        prepared = task.prepare(
            task.inference.load_processor(
                resolve_model(cfg.model.name, cfg.model.revision), cfg.model.trust_remote_code
            )
        )
        task.write_data_report(prepared, str(out))
        return out / "report.md"
    if cfg.data.clean.label_noise == "none":
        cfg.data.clean.label_noise = "report"
    train, val, test, report, _ = _frames(cfg)
    lengths, unit, chinese = _token_lengths(cfg, {"train": train, "validation": val, "test": test})
    if chinese:
        report["chinese_text"] = chinese
    from tuneforge.data.report import write_report

    path = write_report(
        out, report, lengths, cfg.data.max_length, title=f"Data report: {cfg.data.train} (lengths in {unit})"
    )
    if guessed:
        text = path.read_text()
        head, _, rest = text.partition("\n\n")
        path.write_text(head + "\n\n## Columns (guessed)\n\n" + "".join(f"- {g}\n" for g in guessed) + "\n" + rest)
    return path


def prepare_data(
    source: str, out_dir: str, overrides: Iterable[str] = (), fmt: str = "jsonl", overwrite: bool = False
) -> dict:
    """Write the cleaned, augmented, split data as files, with the data report and a manifest.

    Args:
        source: a YAML run config (or a data file, read with the default classification config).
        out_dir: output directory; must be empty or absent unless `overwrite`.
        overrides: `key=value` config overrides.
        fmt: `jsonl`, `parquet` or `both`.
        overwrite: replace an existing non-empty directory.

    Returns:
        The manifest (also written as manifest.json): files, row counts, and the overrides that train on them.

    Raises:
        ConfigError: bad format, config or a non-empty out_dir; DataError, ModelError as for training.
    """
    if fmt not in ("jsonl", "parquet", "both"):
        raise ConfigError(f"--format: unknown format '{fmt}' (use jsonl, parquet or both)")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ConfigError(f"{out_dir} exists and is not empty; choose another --out or pass --overwrite")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    cfg = config_for(source, overrides)
    train, val, test, report, labels = _frames(cfg)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    rows = {}
    for name, df in (("train", train), ("validation", val), ("test", test)):
        if df is None or len(df) == 0:
            continue
        rows[name] = int(len(df))
        df = df.reset_index(drop=True)
        for kind in ("jsonl", "parquet") if fmt == "both" else (fmt,):
            path = out / f"{name}.{kind}"
            if kind == "jsonl":
                df.to_json(path, orient="records", lines=True, force_ascii=False)
            else:
                df.to_parquet(path, index=False)
            files.setdefault(name, []).append(str(path))
    from tuneforge.data.report import write_report

    write_report(out, report, None, cfg.data.max_length, title=f"Prepared data: {cfg.data.train}")
    kind = "jsonl" if fmt != "parquet" else "parquet"
    reuse = [f"data.{name}={out / f'{name}.{kind}'}" for name in ("train", "validation", "test") if name in rows]
    manifest = {
        "source": str(source),
        "overrides": list(overrides),
        "rows": rows,
        "files": files,
        "labels": labels,
        "text_column": cfg.data.text_column,
        "label_column": cfg.data.label_column,
        "train_with": reuse + list(REUSE_OVERRIDES),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest
