"""What a search leaves in its study directory when it ends: trials.csv, best.yaml, test.json (the best trial's
test split, evaluated once), plots/*.png and a self-contained report.html; and the table `tuneforge search summary`
prints."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import TuneforgeError, first_line

PLOTS = ("history", "importances", "parallel", "slice")
#: trials.csv's column for each extra objective
OBJECTIVE_COLUMNS = {"time": "train_seconds", "params": "trainable_params"}
FIXED = ["trial", "state", "value", "duration_s", "pruned_at_step", "worker", "run_dir", "error"]


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) else None


def trial_rows(study, objectives: list[str], metric: str) -> list[dict]:
    """One row per trial: number, state, the metric (and the other objectives), duration, the sampled config
    values (by config key), where its run is, and (several objectives) whether it is on the Pareto front."""
    from optuna.trial import TrialState

    multi = len(objectives) > 1
    front = (
        {t.number for t in study.best_trials}
        if multi and any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        else set()
    )
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        value = None
        if t.state == TrialState.COMPLETE and t.values:
            value = t.values[0]
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        row = {
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": value,
            "duration_s": round(duration, 2) if duration is not None else None,
            "pruned_at_step": a.get("pruned_at_step"),
            "worker": a.get("worker"),
            "run_dir": a.get("run_dir"),
            "error": a.get("error"),
        }
        for i, name in enumerate(objectives[1:], start=1):
            v = t.values[i] if t.state == TrialState.COMPLETE and t.values and len(t.values) > i else None
            row[OBJECTIVE_COLUMNS[name]] = int(v) if name == "params" and v is not None else v
        if multi:
            row["pareto"] = t.number in front
        for key, v in (a.get("params") or {}).items():
            row[f"param:{key}"] = v
        rows.append(row)
    return rows


def _columns(rows: list[dict]) -> list[str]:
    cols = list(FIXED)
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_csv(rows: list[dict], path: Path, metric: str) -> None:
    cols = _columns(rows)
    header = [metric if c == "value" else c.removeprefix("param:") for c in cols]
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    tmp.replace(path)


def rows_from_csv(path: Path) -> list[dict]:
    """trials.csv read back into rows (for `tuneforge search summary` when the storage cannot be reached)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        rows = []
        plain = set(FIXED) | set(OBJECTIVE_COLUMNS.values()) | {"pareto"}
        for cells in reader:
            row: dict = {}
            for i, (h, c) in enumerate(zip(header, cells)):
                key = "value" if i == 2 else h if h in plain else f"param:{h}"
                row[key] = c if c != "" else None
            rows.append(row)
    return rows


def format_table(rows: list[dict], metric: str, study: str) -> str:
    """The trials as an aligned text table, best first (finished ones), then the rest by number."""
    params = [c for c in _columns(rows) if c.startswith("param:")]
    extra = [c for c in (*OBJECTIVE_COLUMNS.values(), "pareto") if any(c in r for r in rows)]
    from tuneforge.search.space import short

    head = ["trial", "state", metric, *extra, "time_s", *(short(p.removeprefix("param:")) for p in params)]
    lines = []
    for r in rows:
        value = _num(_maybe_float(r.get("value")))
        state = str(r.get("state") or "")
        if state == "pruned" and r.get("pruned_at_step") not in (None, ""):
            state = f"pruned@{r['pruned_at_step']}"
        cells = [str(r.get("trial")), state, f"{value:.4f}" if value is not None else "-"]
        for c in extra:
            v = r.get(c)
            cells.append(_fmt(_maybe_float(v)) if c != "pareto" else ("*" if str(v) in ("True", "true") else ""))
        d = _num(_maybe_float(r.get("duration_s")))
        cells.append(f"{d:.0f}" if d is not None else "-")
        cells += [_fmt(_maybe_float(r.get(p))) for p in params]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = [f"study {study}: {len(rows)} trials"]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for cells in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(out)


def _maybe_float(v):
    if isinstance(v, str):
        try:
            return int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            return v
    return v


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4g}"
    return str(v)


def best_trial(study, multi: bool):
    """The best complete trial: single objective, Optuna's best; several, the best-quality trial on the Pareto
    front. None when no trial completed."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if not multi:
        return study.best_trial
    front = study.best_trials
    maximize = study.directions[0].name.lower() == "maximize"
    return (max if maximize else min)(front, key=lambda t: t.values[0])


def write_best_yaml(plan, trial, path: Path) -> dict:
    """The best trial's complete resolved config as a config `tuneforge train` runs as it is (a new run directory
    named <study>-best, not the trial's own)."""
    run_dir = Path(trial.user_attrs.get("run_dir", ""))
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):  # trained on another machine (shared storage): rebuild it from the values
        from tuneforge.config import validate_config
        from tuneforge.search.space import apply

        saved = validate_config(apply(plan.base, trial.user_attrs.get("params") or {})).model_dump(mode="json")
    out = dict(saved.get("output") or {})
    out.pop("dir", None)
    out.update({"name": f"{plan.study_name}-best", "overwrite": False})
    saved["output"] = out
    header = (
        f"# best trial {trial.number} of study {plan.study_name}: {plan.metric}={trial.values[0]:.6g} on the "
        f"validation split\n# its run: {run_dir}\n# train it with: tuneforge train {path}\n"
    )
    path.write_text(header + yaml.safe_dump(saved, sort_keys=False, allow_unicode=True))
    return saved


def evaluate_best_test(plan, trial, path: Path, echo: Callable[[str], None]) -> dict:
    """The best trial's metrics on its test split, once (kept while the best trial stays the same)."""
    from tuneforge.training.jsonfile import write_json

    run_dir = Path(trial.user_attrs.get("run_dir", ""))
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if old.get("trial") == trial.number and (old.get("metrics") or old.get("skipped")):
                return old
        except ValueError:
            pass
    result: dict[str, Any] = {
        "study": plan.study_name,
        "trial": trial.number,
        "run_dir": str(run_dir),
        "split": "test",
        "metric": plan.metric,
        "validation": trial.values[0],
    }
    try:
        from tuneforge.inference import evaluate

        metrics = evaluate(run_dir, out_dir=run_dir / "eval" / "test-split")
        result["metrics"] = {k: v for k, v in (metrics or {}).items() if _num(v) is not None}
        m = result["metrics"]
        shown = [k for k in (plan.metric, "accuracy", "f1_macro", "auc_roc") if isinstance(m.get(k), float)]
        text = " ".join(f"{k}={m[k]:.4f}" for k in dict.fromkeys(shown)) or "no metrics"
        echo(f"tuneforge: best trial {trial.number} on the test split (evaluated once): {text}")
    except TuneforgeError as exc:
        result["skipped"] = f"the test split could not be evaluated: {exc}"
        echo(f"tuneforge: best trial {trial.number}: {result['skipped']}")
    write_json(path, result)
    return result


def _plots(study, plan, out_dir: Path) -> dict[str, str]:
    """PNG plots through optuna.visualization.matplotlib; {name: path}, or {name: 'skipped: why'}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    from tuneforge.evaluation.plots import save_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    target = (lambda t: t.values[0]) if plan.multi else None
    name = plan.metric
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    jobs = {
        "history": lambda: ovm.plot_optimization_history(study, target=target, target_name=name),
        "importances": lambda: ovm.plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator(), target=target, target_name=name
        ),
        "parallel": lambda: ovm.plot_parallel_coordinate(study, target=target, target_name=name),
        "slice": lambda: ovm.plot_slice(study, target=target, target_name=name),
    }
    if plan.multi:
        jobs["pareto"] = lambda: ovm.plot_pareto_front(study, target_names=[name, *plan.objectives[1:]])
    done: dict[str, str] = {}
    for key, make in jobs.items():
        if len(complete) < (2 if key in ("importances", "parallel") else 1):
            done[key] = "skipped: too few complete trials"
            continue
        try:
            ax = make()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5)
            fig.set_dpi(90)
            with warnings.catch_warnings():  # the parallel plot's colorbar axes: tight_layout leaves them be
                warnings.simplefilter("ignore", UserWarning)
                fig.tight_layout()
                # again once drawn: a log axis decides which minor tick labels it shows only when drawn, and one
                # at the right edge could stick out of the first layout (seen once in CI on a slice plot)
                fig.canvas.draw()
                fig.tight_layout()
            path = out_dir / f"{key}.png"
            save_figure(fig, path, dpi=90)
            done[key] = str(path)
        except Exception as exc:
            plt.close("all")
            done[key] = f"skipped: {first_line(exc, 160)}"
    return done


def write_html(plan, rows: list[dict], best, test: dict | None, plots: dict[str, str], path: Path) -> None:
    """report.html with every plot embedded (base64 PNG): opens anywhere, no other file needed."""
    esc = html.escape
    cols = _columns(rows)
    head = "".join(
        f"<th>{esc(plan.metric if c == 'value' else c.removeprefix('param:'))}</th>"
        for c in cols
        if c not in ("run_dir", "error")
    )
    body = []
    for r in rows:
        cls = " class='best'" if best is not None and r["trial"] == best.number else ""
        cells = "".join(
            f"<td>{esc(_fmt(r.get(c)) if not isinstance(r.get(c), str) else r.get(c))}</td>"
            for c in cols
            if c not in ("run_dir", "error")
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    figs = []
    for key, where in plots.items():
        if where.startswith("skipped"):
            figs.append(f"<p><b>{esc(key)}</b>: {esc(where)}</p>")
        else:
            data = base64.b64encode(Path(where).read_bytes()).decode()
            figs.append(f"<h3>{esc(key)}</h3><img alt='{esc(key)}' src='data:image/png;base64,{data}'>")
    best_html = "<p>No trial completed.</p>"
    if best is not None:
        params = best.user_attrs.get("params") or {}
        best_html = (
            f"<p>Best trial <b>{best.number}</b>: {esc(plan.metric)} = {best.values[0]:.6g} (validation)"
            + (
                f"; test {esc(plan.metric)} = {esc(_fmt((test.get('metrics') or {}).get(plan.metric)))}"
                if test and test.get("metrics")
                else ""
            )
            + "</p><ul>"
            + "".join(f"<li><code>{esc(k)}</code> = {esc(_fmt(v))}</li>" for k, v in params.items())
            + "</ul>"
        )
    failed = [r for r in rows if r.get("state") == "fail" and r.get("error")]
    fail_html = "".join(f"<li>trial {r['trial']}: {esc(str(r['error']))}</li>" for r in failed)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tuneforge search: {esc(plan.study_name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}tr.best{{background:#e6f4e6}}
img{{max-width:100%}}</style>
</head><body><h1>Search {esc(plan.study_name)}</h1>
<p>Objective: {esc(plan.metric)} ({"max" if plan.greater else "min"}imize) on the validation split
{esc(", ".join(plan.objectives[1:]) and "; also " + ", ".join(plan.objectives[1:]) + " (minimize, Pareto front)")};
sampler {esc(plan.sampler)}, pruner {esc(plan.pruner)}; {len(rows)} trials.</p>
<h2>Best</h2>{best_html}
<h2>Trials</h2><table><tr>{head}</tr>{"".join(body)}</table>
{"<h2>Failed trials</h2><ul>" + fail_html + "</ul>" if fail_html else ""}
<h2>Plots</h2>{"".join(figs)}
</body></html>"""
    path.write_text(page)


def write_outputs(plan, study, echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr)):
    """trials.csv, best.yaml, test.json, plots/*.png, report.html; prints the table. Returns a SearchResult."""
    from tuneforge.search.storage import counts
    from tuneforge.search.study import SearchResult

    d = plan.study_dir
    rows = trial_rows(study, plan.objectives, plan.metric)
    write_csv(rows, d / "trials.csv", plan.metric)
    best = best_trial(study, plan.multi)
    files = {"trials": str(d / "trials.csv")}
    test = None
    best_info = None
    if best is not None:
        write_best_yaml(plan, best, d / "best.yaml")
        files["best"] = str(d / "best.yaml")
        test = evaluate_best_test(plan, best, d / "test.json", echo)
        files["test"] = str(d / "test.json")
        best_info = {
            "trial": best.number,
            "value": best.values[0],
            "params": best.user_attrs.get("params") or {},
            "run_dir": best.user_attrs.get("run_dir"),
        }
    plots = _plots(study, plan, d / "plots")
    write_html(plan, rows, best, test, plots, d / "report.html")
    files["report"] = str(d / "report.html")
    done, _ = counts(study)
    print(format_table(rows, plan.metric, plan.study_name), file=sys.stderr, flush=True)
    if best is None:
        echo(f"tuneforge: no trial completed ({done} of {plan.trials} finished); report in {d / 'report.html'}")
    else:
        echo(
            f"tuneforge: {done} of {plan.trials} trials finished; best trial {best.number} "
            f"({plan.metric}={best.values[0]:.4f}): {d / 'best.yaml'}; report in {d / 'report.html'}"
        )
    return SearchResult(study_dir=d, finished=done, best=best_info, files=files)
