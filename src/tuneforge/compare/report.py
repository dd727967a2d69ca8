"""The comparison report from run directories: compare.json (every number), report.md and a self-contained
report.html (tables and plots embedded as data URIs: it opens offline and can be mailed as one file)."""

from __future__ import annotations

import base64
import html
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tuneforge.compare.collect import expand_run_dirs, group_runs, read_run
from tuneforge.compare.plots import memory_key, plot_bars, plot_loss_curves, plot_quality_vs_cost
from tuneforge.errors import RunDirError
from tuneforge.training.jsonfile import write_json

#: how "best value" is defined, printed in every report
COST_DEFINITION = (
    "cost = mean training wall time in minutes (evaluation excluded); value = metric / cost for "
    "metrics where higher is better, metric x cost for metrics where lower is better"
)

PLOTS = {"bars": "bars.png", "scatter": "quality_vs_cost.png", "curves": "loss_curves.png"}


@dataclass
class Report:
    out_dir: Path
    data: dict

    @property
    def json_path(self) -> Path:
        return self.out_dir / "compare.json"

    @property
    def html_path(self) -> Path:
        return self.out_dir / "report.html"

    @property
    def md_path(self) -> Path:
        return self.out_dir / "report.md"


def _columns(groups: list[dict]) -> list[tuple[str, str, str, int]]:
    """(section, key, header, decimals) of the summary table; columns no run measured are left out."""
    metric_names: list[str] = []
    for g in groups:
        metric_names += [m for m in g["metrics"] if m not in metric_names]
    mem, _ = memory_key(groups)
    cols = [("metrics", m, m, 4) for m in metric_names]
    cols += [
        ("efficiency", "trainable_params", "trainable params", 0),
        ("efficiency", "trainable_percent", "trainable %", 3),
        ("efficiency", "train_seconds", "train time (s)", 1),
        ("efficiency", "train_samples_per_second", "train samples/s", 2),
        ("efficiency", "train_tokens_per_second", "train tokens/s", 0),
        ("efficiency", "time_to_first_step_seconds", "first step (s)", 2),
    ]
    if mem == "peak_gpu_allocated_mb":
        cols += [
            ("efficiency", "peak_gpu_allocated_mb", "GPU alloc (MiB)", 0),
            ("efficiency", "peak_gpu_reserved_mb", "GPU reserved (MiB)", 0),
        ]
    cols += [
        ("efficiency", "peak_rss_mb", "peak RSS (MiB)", 0),
        ("efficiency", "model_size_mb", "artefact (MiB)", 2),
        ("efficiency", "inference_latency_ms_p50", "latency p50 (ms)", 1),
        ("efficiency", "inference_latency_ms_p95", "latency p95 (ms)", 1),
        ("efficiency", "inference_samples_per_second", "inference samples/s", 1),
    ]
    return [c for c in cols if c[0] == "metrics" or any(g[c[0]].get(c[1]) for g in groups)]


def _fmt(stats: dict | None, decimals: int) -> str:
    if not stats:
        return "–"
    if decimals == 0:
        text = f"{stats['mean']:,.0f}"
        return text + (f" ± {stats['std']:,.0f}" if stats["n"] > 1 else "")
    text = f"{stats['mean']:.{decimals}f}"
    return text + (f" ± {stats['std']:.{decimals}f}" if stats["n"] > 1 else "")


def _pick(groups: list[dict], metric: str | None, greater: bool) -> tuple[dict | None, dict | None, dict]:
    """The group with the best mean metric and the one with the best value (see COST_DEFINITION)."""
    scored = [g for g in groups if metric and g["metrics"].get(metric)]
    if not scored:
        return None, None, {}

    def cost(g):
        t = g["efficiency"].get("train_seconds")
        return t["mean"] if t else float("inf")

    # equal metrics (common in short smoke runs that all predict the majority class): the cheaper one wins
    best = min(scored, key=lambda g: ((-1 if greater else 1) * round(g["metrics"][metric]["mean"], 9), cost(g)))
    values = {}
    for g in scored:
        t = g["efficiency"].get("train_seconds")
        if t and t["mean"] > 0:
            minutes = t["mean"] / 60.0
            m = g["metrics"][metric]["mean"]
            values[g["label"]] = m / minutes if greater else m * minutes
    if not values:
        return best, None, {}
    label = (max if greater else min)(values, key=values.get)
    return best, next(g for g in scored if g["label"] == label), values


def build_report(run_dirs, out_dir: str | os.PathLike | None = None, title: str | None = None) -> Report:
    """Compare run directories and write compare.json, report.md, report.html and the plots into out_dir.

    Args:
        run_dirs: run directories, or directories of runs (a comparison directory); runs of the same config
            that differ only in `train.seed` are aggregated (mean and standard deviation).
        out_dir: where to write; default: the runs' common parent directory when they share one.
        title: the report's heading.

    Returns a Report (paths and the compare.json data).
    Raises RunDirError when a path is missing or holds no run, or out_dir cannot be chosen."""
    paths = expand_run_dirs(run_dirs)
    if not paths:
        raise RunDirError("no run directories to compare")
    if out_dir is None:
        parents = {p.resolve().parent for p in paths}
        if len(parents) != 1:
            raise RunDirError("the runs are in different directories: choose where the report goes with --out DIR")
        out_dir = parents.pop()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    records = [read_run(p) for p in paths]
    groups = group_runs(records)
    metric_counts = Counter(g["metric"] for g in groups if g["metric"] and g["metrics"].get(g["metric"]))
    metric = metric_counts.most_common(1)[0][0] if metric_counts else None
    greater = next((g["greater_is_better"] for g in groups if g["metric"] == metric), True)
    best, value, values = _pick(groups, metric, greater)
    mem, mem_label = memory_key(groups)

    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    by_name = {r.name: r for r in records}
    if len(by_name) != len(records):  # two runs from different parents with the same name
        by_name = {}
        for r in records:
            key = r.name if r.name not in by_name else f"{r.name}@{r.path.parent.name}"
            r.name = key
            by_name[key] = r
        groups = group_runs(records)
    plot_bars(groups, metric or "metric", plots_dir / PLOTS["bars"])
    plot_quality_vs_cost(groups, metric or "metric", plots_dir / PLOTS["scatter"])
    plot_loss_curves(groups, by_name, plots_dir / PLOTS["curves"])

    data = {
        "title": title or "Method comparison",
        "created_at": datetime.now().isoformat(timespec="seconds"),
        "metric": metric,
        "greater_is_better": greater,
        "memory": mem,
        "best": best["label"] if best else None,
        "best_value": value["label"] if value else None,
        "value_scores": values,
        "cost_definition": COST_DEFINITION,
        "groups": groups,
        "runs": [r.to_json() for r in records],
        "plots": {k: f"plots/{v}" for k, v in PLOTS.items()},
        "columns": [{"section": s, "key": k, "header": h} for s, k, h, _ in _columns(groups)],
    }
    report = Report(out, data)
    write_json(report.json_path, data)
    report.md_path.write_text(_markdown(data, groups, records, mem_label), encoding="utf-8")
    report.html_path.write_text(_html(data, groups, records, plots_dir), encoding="utf-8")
    return report


def _lr(g: dict) -> str:
    return f"{g['learning_rate']:g}" if isinstance(g.get("learning_rate"), (int, float)) else "–"


def _summary_lines(data: dict) -> list[str]:
    lines = []
    metric, arrow = data["metric"], "higher" if data["greater_is_better"] else "lower"
    if data["best"]:
        lines.append(f"Best {metric} ({arrow} is better): **{data['best']}**.")
    if data["best_value"]:
        lines.append(f"Best {metric} per unit of cost: **{data['best_value']}** ({data['cost_definition']}).")
    if not data["best"]:
        lines.append("No run completed with final metrics.")
    return lines


def _markdown(data: dict, groups: list[dict], records, mem_label: str) -> str:
    cols = _columns(groups)
    head = ["method", "state", "runs", *[h for _, _, h, _ in cols], "learning rate", "error"]
    lines = [
        f"# {data['title']}",
        "",
        *_summary_lines(data),
        "",
        f"Values are mean ± standard deviation over seeds where several ran. Memory: {mem_label}. "
        f"Metrics are on the {_split_of(records)} split. Inference: batch-1 latency and batched throughput "
        f"of the trained model (a forward pass; no text generation).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for g in groups:
        cells = [g["label"], g["state"], str(len(g["runs"]))]
        cells += [_fmt(g[s].get(k), d) for s, k, _, d in cols]
        cells += [_lr(g), "; ".join(g["errors"]).replace("|", "\\|")[:300]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Runs",
        "",
        "| run | method | seed | state | " + (data["metric"] or "metric") + " | train time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        m = r.metrics.get(data["metric"]) if data["metric"] else None
        t = r.efficiency.get("train_seconds")
        lines.append(
            f"| {r.name} | {r.method} | {r.seed} | {r.state} | {'' if m is None else f'{m:.4f}'} | "
            f"{'' if t is None else f'{t:.1f}'} |"
        )
    lines += [
        "",
        "## Plots",
        "",
        f"![metric, time, memory, trainable share]({data['plots']['bars']})",
        "",
        f"![quality versus cost]({data['plots']['scatter']})",
        "",
        f"![loss curves]({data['plots']['curves']})",
        "",
    ]
    return "\n".join(lines)


def _split_of(records) -> str:
    splits = sorted({r.metrics_split for r in records if r.metrics_split})
    return "/".join(splits) or "held-out"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0} td.l,th.l{text-align:left} td.err{color:#a00;white-space:normal;max-width:30em;text-align:left}
tr.best td{background:#eef8ee} img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
.note{color:#555;font-size:0.9em}
"""


def _html(data: dict, groups: list[dict], records, plots_dir: Path) -> str:
    e = html.escape
    cols = _columns(groups)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(data['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(data['title'])}</h1>",
    ]
    for line in _summary_lines(data):
        parts = line.split("**")
        out.append("<p>" + "".join(f"<strong>{e(p)}</strong>" if i % 2 else e(p) for i, p in enumerate(parts)) + "</p>")
    out.append(
        f'<p class="note">Created {e(data["created_at"])}. Values are mean ± standard deviation over seeds '
        f"where several ran. Metrics on the {e(_split_of(records))} split. Inference: batch-1 latency and "
        f"batched throughput of the trained model (forward pass, no generation).</p>"
    )
    out.append(
        '<h2>Summary</h2><table id="summary"><thead><tr><th class="l">method</th><th class="l">state</th>'
        "<th>runs</th>"
        + "".join(f"<th>{e(h)}</th>" for _, _, h, _ in cols)
        + '<th>learning rate</th><th class="l">error</th></tr></thead><tbody>'
    )
    for g in groups:
        cls = ' class="best"' if g["label"] in (data["best"], data["best_value"]) else ""
        out.append(
            f'<tr{cls}><td class="l">{e(g["label"])}</td><td class="l">{e(g["state"])}</td>'
            f"<td>{len(g['runs'])}</td>"
            + "".join(f"<td>{e(_fmt(g[s].get(k), d))}</td>" for s, k, _, d in cols)
            + f'<td>{e(_lr(g))}</td><td class="err">{e("; ".join(g["errors"]))}</td></tr>'
        )
    out.append("</tbody></table>")
    metric = data["metric"] or "metric"
    out.append("<h2>Plots</h2>")
    for key, alt in (
        ("bars", "metric, train time, memory and trainable share per method"),
        ("scatter", "quality versus cost"),
        ("curves", "training and validation loss"),
    ):
        png = plots_dir / PLOTS[key]
        if png.is_file():
            out.append(f'<p><img alt="{e(alt)}" src="{_data_uri(png)}"></p>')
    out.append(
        '<h2>Runs</h2><table id="runs"><thead><tr><th class="l">run</th><th class="l">method</th>'
        f'<th>seed</th><th class="l">state</th><th>{e(metric)}</th><th>train time (s)</th>'
        '<th class="l">directory</th></tr></thead><tbody>'
    )
    for r in records:
        m = r.metrics.get(data["metric"]) if data["metric"] else None
        t = r.efficiency.get("train_seconds")
        out.append(
            f'<tr><td class="l">{e(r.name)}</td><td class="l">{e(r.method)}</td><td>{e(str(r.seed))}</td>'
            f'<td class="l">{e(r.state)}</td><td>{"" if m is None else f"{m:.4f}"}</td>'
            f'<td>{"" if t is None else f"{t:.1f}"}</td><td class="l">{e(str(r.path))}</td></tr>'
        )
    out.append("</tbody></table>")
    out.append(f'<p class="note">{e(data["cost_definition"])}.</p></body></html>')
    return "\n".join(out)
