"""What a multi-task run reports: its data report (the sources and their splits, each sub-task's labelled rows
and classes, token lengths, the rows that did not reach training) and its metrics and evaluation reports, per
sub-task and combined, shared by training, `tuneforge eval` and the export parity check (`parts`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tuneforge.kernels.multitask import IGNORE

if TYPE_CHECKING:
    from tuneforge.tasks.base import Prepared
    from tuneforge.tasks.multitask_data import SourceSplit


def data_report(parts: list[SourceSplit], labels: dict[str, list[str]], tasks: dict) -> dict:
    """The data report's entries: rows per source and split, and per sub-task its labelled rows and classes per
    split (`tasks`: task.tasks of the config)."""
    report: dict = {"sources": [], "subtasks": {}}
    for p in parts:
        report["sources"].append(
            {
                "file": p.source.path,
                "key": p.source.key,
                "subtasks": p.source.subtasks,
                **{
                    split: 0 if getattr(p, split) is None else len(getattr(p, split))
                    for split in ("train", "validation", "test")
                },
            }
        )
    for name, s in tasks.items():
        per = {}
        for split in ("train", "validation", "test"):
            counts: dict[str, int] = {n: 0 for n in labels[name]}
            n_rows = 0
            for p in parts:
                df = getattr(p, split)
                if df is None or s.label_column not in df.columns:
                    continue
                for v in df[s.label_column]:
                    if v is None:
                        continue
                    n_rows += 1
                    for x in v if s.problem == "multi_label" else [v]:
                        counts[x] = counts.get(x, 0) + 1
            per[split] = {"labelled_rows": n_rows, "classes": counts}
        report["subtasks"][name] = {
            "problem": s.problem,
            "label_column": s.label_column,
            "weight": s.weight,
            "splits": per,
        }
    return report


def write_data_report(prepared: Prepared, out_dir: str, max_length: int) -> None:
    """data/report.md and report.json of a multi-task run."""
    from tuneforge.data.report import bad_records_section, left_out_section, read_line

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = prepared.report
    (out / "report.json").write_text(json.dumps(r, indent=2, ensure_ascii=False, default=str))
    md = ["# Data used by this run (multi-task)", "", "## Sources", "", *read_line(r)]
    md += ["| file | config key | sub-tasks | train | validation | test |", "|---|---|---|---|---|---|"]
    md += [
        f"| {s['file']} | {s['key']} | {', '.join(s['subtasks'])} | {s['train']} | {s['validation']} | {s['test']} |"
        for s in r["sources"]
    ]
    for name, t in r["subtasks"].items():
        md += [
            "",
            f"## Sub-task `{name}` ({t['problem']}, column `{t['label_column']}`, weight {t['weight']:g})",
            "",
            "| split | labelled rows | classes |",
            "|---|---|---|",
        ]
        md += [
            f"| {split} | {v['labelled_rows']} | {', '.join(f'{k}: {n}' for k, n in v['classes'].items())} |"
            for split, v in t["splits"].items()
        ]
    if prepared.lengths:
        md += ["", "## Token lengths", "", "| split | mean | max | cut at max_length |", "|---|---|---|---|"]
        md += [
            f"| {k} | {np.mean(v):.1f} | {max(v)} | {sum(x >= max_length for x in v)} |"
            for k, v in prepared.lengths.items()
            if v
        ]
    for section in (left_out_section(r), bad_records_section(r)):
        md += ["", *section] if section else []
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")


def learned_weights(model, spec: dict) -> dict | None:
    """Uncertainty weighting's learned factor exp(-s_i) per sub-task (None with fixed weights)."""
    import torch

    found = [(n, m) for n, m in model.named_modules() if n.split(".")[-1] == "task_weighting"]
    if not found:
        return None
    with torch.no_grad():  # the outermost match: PEFT's wrapper answers with the trained copy
        s = min(found, key=lambda x: len(x[0]))[1]().float().cpu().numpy()
    return {h["name"]: round(float(np.exp(-v)), 6) for h, v in zip(spec["heads"], s)}


def parts(logits: np.ndarray, labels: np.ndarray, spec: dict):
    """(layout, logits of its labelled rows, their labels) per sub-task."""
    from tuneforge.kernels.multitask import offsets
    from tuneforge.models.multitask import layouts

    lay = layouts(spec)
    for h, (lc, yc) in zip(lay, offsets(lay)):
        y = labels[:, yc]
        keep = y[:, 0] != IGNORE
        yield h, logits[keep][:, lc], (y[keep] if h.multi_label else y[keep][:, 0].astype(int))


def subtask_metrics(logits: np.ndarray, labels: np.ndarray, spec: dict, chosen: dict[str, str]) -> dict[str, float]:
    """Flat metrics `<sub-task>_<metric>` and `combined` (the mean of each sub-task's chosen metric over the
    sub-tasks with labelled rows)."""
    from tuneforge.evaluation.classification import classification_metrics
    from tuneforge.evaluation.multilabel import multilabel_metrics

    out: dict[str, float] = {}
    picked = []
    for h, z, y in parts(logits, labels, spec):
        if len(y) == 0:
            continue
        m = multilabel_metrics(z, y) if h.multi_label else classification_metrics(z, y)
        out.update({f"{h.name}_{k}": v for k, v in m.items() if k != "loss"})
        if chosen.get(h.name) in m:
            picked.append(m[chosen[h.name]])
    first = {}
    if picked:
        first["combined"] = round(float(np.mean(picked)), 6)
    # the selection metric and each sub-task's own metric first (eval log lines show the first few)
    first.update({k: out[k] for k in (f"{n}_{m}" for n, m in chosen.items()) if k in out})
    return {**first, **out}


def write_reports(
    logits: np.ndarray,
    labels: np.ndarray,
    spec: dict,
    label_names: dict[str, list[str]],
    chosen: dict[str, str],
    out_dir: Path,
    title: str,
    validation: dict | None = None,
) -> dict:
    """Each sub-task's report in out_dir/<name>/ (metrics.json, report.md, confusion_matrix.png), and the
    combined out_dir/metrics.json and report.md. Returns the flat metrics with `tasks` (each full report)."""
    from tuneforge.evaluation.classification import write_classification_report
    from tuneforge.evaluation.multilabel import write_multilabel_report

    out_dir.mkdir(parents=True, exist_ok=True)
    flat = subtask_metrics(logits, labels, spec, chosen)
    tasks = {}
    for h, z, y in parts(logits, labels, spec):
        if len(y) == 0:
            continue
        write = write_multilabel_report if h.multi_label else write_classification_report
        tasks[h.name] = write(
            z, y, label_names[h.name], out_dir / h.name, title=f"{h.name}: {title}, {len(y)} labelled rows"
        )
    result = {**flat, "tasks": tasks}
    payload = {"test": result, **({"validation": validation} if validation is not None else {})}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    lines = [
        "# Evaluation report (multi-task)",
        "",
        title,
        "",
        f"combined (mean of each sub-task's {', '.join(f'{n}: {m}' for n, m in chosen.items())}): "
        f"**{flat.get('combined', float('nan')):.4f}**",
        "",
        "| sub-task | labelled rows | metric | value | report |",
        "|---|---|---|---|---|",
    ]
    for n, t in tasks.items():
        m = chosen.get(n, "accuracy")
        lines.append(f"| {n} | {t['n']} | {m} | {t.get(m, float('nan')):.4f} | [{n}/report.md]({n}/report.md) |")
    if validation:
        lines += ["", "## Best validation metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in validation.items() if isinstance(v, (int, float))]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return result
