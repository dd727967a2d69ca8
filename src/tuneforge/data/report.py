"""The data report (markdown + PNG plots): class distribution, token lengths, duplicates, suspected label errors,
language mix, and what cleaning/augmentation did. Written by `tuneforge data inspect` and into every run
directory as data/report.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tuneforge.evaluation.plots import save_figure


def _md_escape(text: str, limit: int = 160) -> str:
    text = str(text).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _md_path(path: str) -> str:
    """A data file's name in full: shortening it would hide which file a count or a row belongs to."""
    return _md_escape(path, limit=10**6)


def _table(header: Sequence[str], rows: list[Sequence]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return out + [""]


def _plots(out: Path, report: dict, lengths: dict[str, Sequence[int]] | None, max_length: int | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    splits = [
        (name, report.get(key))
        for name, key in (
            ("train (before)", "before"),
            ("train (after)", "after"),
            ("validation", "validation"),
            ("test", "test"),
        )
    ]
    splits = [(n, s) for n, s in splits if s]
    classes = sorted({c for _, s in splits for c in s["classes"]})
    if classes:
        fig, ax = plt.subplots(figsize=(max(5, 1 + 0.6 * len(classes) * len(splits) / 2), 3.5))
        width = 0.8 / len(splits)
        x = np.arange(len(classes))
        for k, (name, s) in enumerate(splits):
            ax.bar(x + k * width, [s["classes"].get(c, 0) for c in classes], width, label=name)
        ax.set_xticks(x + 0.4 - width / 2, [c[:20] for c in classes], rotation=30 if len(classes) > 6 else 0)
        ax.set_ylabel("rows")
        ax.set_title("Class distribution")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, out / "class_distribution.png", dpi=100)
        made.append("class_distribution.png")
    if lengths:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        top = max((max(v) for v in lengths.values() if len(v)), default=1)
        bins = np.linspace(0, top + 1, 40)
        for name, v in lengths.items():
            if len(v):
                ax.hist(v, bins=bins, alpha=0.5, label=name)
        if max_length:
            ax.axvline(max_length, color="red", linestyle="--", label=f"max_length {max_length}")
        ax.set_xlabel("tokens")
        ax.set_ylabel("rows")
        ax.set_title("Text length")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, out / "token_lengths.png", dpi=100)
        made.append("token_lengths.png")
    return made


#: rows listed one by one in report.md (report.json keeps every one)
LISTED_ROWS = 200


def read_line(report: dict) -> list[str]:
    """The rows each data file held ("Read: ..."), and how many of them were left out, above the splits table."""
    read = report.get("read") or {}
    if not read:
        return []
    gone = (report.get("left_out") or []) + ((report.get("bad_records") or {}).get("records") or [])
    return [
        "Read: "
        + "; ".join(
            f"{_md_path(src)}: {n} rows"
            + (f" ({k} left out, see below)" if (k := sum(r["source"] == src for r in gone)) else "")
            for src, n in read.items()
        )
        + ". The splits below count the rows that remained.",
        "",
    ]


def left_out_section(report: dict) -> list[str]:
    """Rows that did not reach training (an empty text or label), counted by reason and listed."""
    from tuneforge.data.left_out import reasons

    records = report.get("left_out") or []
    if not records:
        return []
    md = [
        "## Rows left out",
        "",
        f"{len(records)} row{'s' if len(records) != 1 else ''} had nothing to learn from and "
        f"{'were' if len(records) != 1 else 'was'} left out before splitting:",
        "",
    ]
    md += _table(["reason", "rows"], [[_md_escape(k), v] for k, v in reasons(records).items()])
    md += _records_table(records)
    return md


def bad_records_section(report: dict) -> list[str]:
    """Records that data.bad_records=skip left out, listed with their problem."""
    records = (report.get("bad_records") or {}).get("records") or []
    if not records:
        return []
    md = [
        "## Bad records left out (data.bad_records=skip)",
        "",
        f"{len(records)} record{'s' if len(records) != 1 else ''} could not be used and "
        f"{'were' if len(records) != 1 else 'was'} left out:",
        "",
    ]
    return md + _records_table(records)


def pairs_section(report: dict) -> list[str]:
    """Preference runs: pairs (KTO: answers) per split and how many had an answer cut at data.max_length."""
    pairs = report.get("pairs")
    if not pairs:
        return []
    md = [
        "## Preference pairs" if report.get("unit", "pairs") == "pairs" else "## Preference answers (unpaired, KTO)",
        "",
        f"Format: {report.get('format')}. Prompts are never cut: one longer than data.max_prompt_length="
        f"{report.get('max_prompt_length')} tokens is a bad record. Answers are cut so that prompt + answer fit "
        f"data.max_length={report.get('max_length')}.",
        "",
    ]
    unit = report.get("unit", "pairs")  # KTO: unpaired answers
    cut = "pairs with an answer cut" if unit == "pairs" else "answers cut"
    return md + _table(["split", unit, cut], [[name, p["pairs"], p["truncated"]] for name, p in pairs.items()])


def _records_table(records: list[dict]) -> list[str]:
    shown = records[:LISTED_ROWS]
    md = _table(
        ["source", "record", "problem"],
        [[_md_path(r["source"]), r["record"], _md_escape(r["problem"], 300)] for r in shown],
    )
    if len(records) > len(shown):
        md += [f"(the first {len(shown)}; report.json lists all {len(records)})", ""]
    return md


def write_report(
    out_dir: str | Path,
    report: dict,
    lengths: dict[str, Sequence[int]] | None = None,
    max_length: int | None = None,
    truncated: dict[str, int] | None = None,
    title: str = "Data report",
    plots: bool = True,
) -> Path:
    """Write report.md (+ report.json and PNG plots) into `out_dir`; returns the markdown path.

    Args:
        out_dir: directory (created).
        report: the dict from `prepare.improve_training_data`.
        lengths: token lengths per split name, for the histogram.
        max_length: `data.max_length`, to count examples that are cut.
        truncated: rows per split longer than max_length (default: counted from `lengths` as > max_length).
        title: the heading.
        plots: also draw PNGs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        # the default font lacks CJK glyphs: Chinese class names draw as boxes, which is no reason to warn
        warnings.simplefilter("ignore")
        images = _plots(out, report, lengths, max_length) if plots else []
    md = [f"# {title}", ""]

    md += ["## Splits", ""]
    md += read_line(report)
    rows = []
    for name, key in (
        ("train (as read)", "before"),
        ("train (used)", "after"),
        ("validation", "validation"),
        ("test", "test"),
    ):
        s = report.get(key)
        if s:
            langs = ", ".join(f"{k} {v}" for k, v in s["languages"].items())
            rows.append(
                [name, s["rows"], ", ".join(f"{k}: {v}" for k, v in s["classes"].items()), langs, s["chars"]["mean"]]
            )
    if any(r[2] for r in rows):
        md += _table(["split", "rows", "classes", "languages", "mean chars"], rows)
    else:  # no labels (SFT)
        md += _table(["split", "rows", "languages", "mean chars"], [[r[0], r[1], r[3], r[4]] for r in rows])
    after = report.get("after") or {}
    if after.get("classes"):
        counts = list(after["classes"].values())
        md.append(
            f"Imbalance (largest / smallest class in the training split used): {max(counts) / max(min(counts), 1):.2f}"
        )
        md.append("")
    if "class_distribution.png" in images:
        md += ["![class distribution](class_distribution.png)", ""]

    md += left_out_section(report)
    if report.get("chinese_text"):
        md += ["## Chinese text", "", "Texts holding Han characters, and what they cost this tokenizer.", ""]
        md += _table(
            ["split", "texts", "Chinese characters", "tokens", "tokens per Chinese character"],
            [
                [n, c["texts"], c["chinese_characters"], c["tokens"], c["tokens_per_chinese_character"]]
                for n, c in report["chinese_text"].items()
            ],
        )
    md += bad_records_section(report)

    conv = report.get("conversations")
    if conv:
        md += ["## Conversations", "", f"Format: {report.get('format')}.", ""]
        md += _table(
            [
                "split",
                "records",
                "assistant turns (mean)",
                "trained tokens (share)",
                "truncated",
                "dropped",
                "split into pieces",
                "left out (no answer token left)",
                "Chinese characters",
                "tokens per Chinese character",
            ],
            [
                [
                    name,
                    c["records"],
                    c["assistant_turns_mean"],
                    "-" if c["trained_token_share"] is None else f"{100 * c['trained_token_share']:.1f}%",
                    c["truncated"],
                    c["dropped"],
                    c.get("split", 0),
                    c["no_target_left"],
                    c.get("chinese_characters", 0),
                    c.get("tokens_per_chinese_character") or "-",
                ]
                for name, c in conv.items()
            ],
        )

    md += pairs_section(report)

    if lengths:
        md += ["## Length in tokens", ""]
        rows = []
        for name, v in lengths.items():
            v = np.asarray(list(v))
            if len(v) == 0:
                continue
            cut = (truncated or {}).get(name, int((v > max_length).sum()) if max_length else 0)
            rows.append(
                [
                    name,
                    len(v),
                    round(float(v.mean()), 1),
                    int(np.percentile(v, 50)),
                    int(np.percentile(v, 95)),
                    int(v.max()),
                    f"{cut} ({100 * cut / len(v):.1f}%)",
                ]
            )
        md += _table(["split", "rows", "mean", "median", "p95", "max", f"longer than max_length={max_length}"], rows)
        if "token_lengths.png" in images:
            md += ["![token lengths](token_lengths.png)", ""]

    if report.get("steps"):
        md += ["## What cleaning and augmentation did (training split only)", ""]
        md += _table(
            ["step", "rows before", "rows after", "details"],
            [
                [
                    s["step"],
                    s["rows_before"],
                    s["rows_after"],
                    _md_escape(
                        json.dumps(
                            {k: v for k, v in s.items() if k not in ("step", "rows_before", "rows_after")},
                            ensure_ascii=False,
                        )
                    ),
                ]
                for s in report["steps"]
            ],
        )
        if report.get("class_weights"):
            md += [
                "Class weights in the loss: " + ", ".join(f"{k}: {v}" for k, v in report["class_weights"].items()),
                "",
            ]

    dup = report.get("duplicates") or {}
    if dup:
        md += [
            "## Duplicates",
            "",
            f"- duplicate groups inside train: {dup.get('train_duplicate_groups', 0)} "
            f"({dup.get('train_duplicate_rows', 0)} extra rows)",
            *(
                [f"- groups with conflicting labels: {dup.get('conflicting_groups', 0)}"]
                if "conversations" not in report
                else []
            ),
            f"- training rows that copy a validation/test row: {dup.get('cross_split_train_rows', 0)}",
            f"- training rows removed: {dup.get('removed', 0)}",
            "",
        ]
        if dup.get("conflicts"):
            md += ["Conflicting labels:", ""]
            md += _table(
                ["text", "labels"],
                [[_md_escape(g[0][0]), ", ".join(sorted({lab for _, lab in g}))] for g in dup["conflicts"][:10]],
            )
        if dup.get("cross"):
            md += ["Leaks across splits:", ""]
            md += _table(
                ["training text", "split", "kind", "similarity", "other text"],
                [
                    [_md_escape(m["train"], 80), m["split"], m["kind"], m["similarity"], _md_escape(m["other"], 80)]
                    for m in dup["cross"][:10]
                ],
            )
        if dup.get("groups"):
            md += ["Duplicate groups (first texts):", ""]
            md += _table(["texts"], [[_md_escape(" \u2194 ".join(g), 200)] for g in dup["groups"][:10]])

    noise = report.get("label_noise") or {}
    if noise:
        md += ["## Suspected label errors", ""]
        if noise.get("skipped"):
            md += [f"Not checked: {noise['skipped']}.", ""]
        else:
            detector = {
                "model": "a logistic regression on sentence embeddings of the model",
                "both": "logistic regressions on TF-IDF and on sentence embeddings of the model, averaged",
                "finetune": f"the model fine-tuned once per fold ({noise.get('folds')} folds)",
            }.get(noise.get("features"), "a logistic regression on TF-IDF")
            md += [
                f"{noise['suspects']} training rows look mislabelled (confident learning on out-of-fold "
                f"probabilities of {detector}; its out-of-fold accuracy: "
                f"{noise.get('detector_oof_accuracy')}). Action: `{noise['action']}`"
                + (
                    f", applied to {noise['acted_on']} rows with confidence >= {noise['threshold']}."
                    if noise["action"] in ("drop", "relabel")
                    else "."
                ),
                "",
            ]
            if noise.get("all"):
                md += [
                    f"All {len(noise['all'])} suspects, least likely given label first (`acted`: dropped or "
                    f"relabelled): `label_suspects.jsonl`.",
                    "",
                ]
            if noise.get("examples"):
                md += _table(
                    ["text", "given", "suggested", "confidence"],
                    [
                        [_md_escape(e["text"]), e["given"], e["suggested"], e["confidence"]]
                        for e in noise["examples"][:15]
                    ],
                )
    path = out / "report.md"
    path.write_text("\n".join(md))
    if noise.get("all") is not None:
        with open(out / "label_suspects.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in noise["all"])
        report = {**report, "label_noise": {k: v for k, v in noise.items() if k != "all"}}
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return path
