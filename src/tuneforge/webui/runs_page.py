"""The Runs page: every run under the runs directory with its state and main metric; for the chosen run its
live curves and log (read from metrics.jsonl and train.log every two seconds, so a reload or a second browser
finds the run again), Stop, Resume, and the evaluation report once it has one."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from tuneforge.training.rundir import RunDir
from tuneforge.training.runlist import age_text, describe, log_tail, read_metrics, run_log
from tuneforge.webui.i18n import text
from tuneforge.webui.ui import Ctx, lang_of, message
from tuneforge.webui.workspace import Workspace, error_text, without_images

REMEMBER_RUN = """(name) => {
  const url = new URL(window.location.href);
  if (name) { url.searchParams.set("run", name); } else { url.searchParams.delete("run"); }
  window.history.replaceState(null, "", url);
}"""
#: metrics.jsonl keys that are bookkeeping, not curves
_NOT_CURVES = ("runtime", "per_second", "epoch", "learning_rate", "grad_norm", "flos", "tokens_seen", "time", "step")


def runs_frame(runs: list[dict], lang: str) -> pd.DataFrame:
    """The runs table of `Workspace.runs()` rows, headed in `lang`."""
    rows = [
        [
            r["name"],
            r["state"] or "?",
            r["metric"] or "",
            "" if r["value"] is None else round(float(r["value"]), 4),
            age_text(r["age_seconds"]),
        ]
        for r in runs
    ]
    cols = [text(k, lang) for k in ("run", "state", "metric", "value", "age")]
    return pd.DataFrame(rows, columns=cols)


#: metric curves drawn besides the run's main metric: the first few that appear, per-class averages left out
MAX_METRIC_CURVES = 4
_SECONDARY = ("precision", "recall", "weighted")


def curves(ws: Workspace, run: Path, main: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(losses, other metrics) of a run as long tables (step, value, series) for line plots. The metric plot shows
    `eval_<main>` and the first other metrics to appear, up to MAX_METRIC_CURVES (a classifier logs nine)."""
    loss, other = [], []
    for row in read_metrics(run):
        step = row.get("step")
        if not isinstance(step, (int, float)):
            continue
        for key, value in row.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or any(n in key for n in _NOT_CURVES):
                continue
            (loss if "loss" in key else other).append({"step": step, "value": float(value), "series": key})
    names = list(dict.fromkeys(r["series"] for r in other))
    first = [n for n in names if main and n in (main, f"eval_{main}")]
    rest = [n for n in names if n not in first and not any(w in n for w in _SECONDARY)]
    order = {n: i for i, n in enumerate((first + rest)[:MAX_METRIC_CURVES])}
    other = sorted((r for r in other if r["series"] in order), key=lambda r: (order[r["series"]], r["step"]))
    empty = pd.DataFrame(
        {"step": pd.Series(dtype=float), "value": pd.Series(dtype=float), "series": pd.Series(dtype=str)}
    )
    return (pd.DataFrame(loss) if loss else empty), (pd.DataFrame(other) if other else empty)


def no_line(frame: pd.DataFrame, series: str | None = "series") -> bool:
    """Whether a long table has points but no series with the two points a line needs."""
    if frame.empty:
        return False
    return len(frame) == 1 if series is None else bool((frame.groupby(series).size() < 2).all())


def drawn(plot: gr.LinePlot, frame: pd.DataFrame) -> dict:
    """What `plot` is sent to draw a long table: gradio's plot data for it, with a point mark instead of lines when
    no series has two points (a metric evaluated once drew an empty chart). A chart with some line keeps its lines,
    so a training loss does not turn into dots beside a single eval_loss. Gradio passes a mapping on to the
    browser as it is."""
    data = plot.postprocess(frame)
    if no_line(frame, plot.color):
        data.mark = "point"
    return data.model_dump()


def state_line(ws: Workspace, run: Path, d: dict) -> str:
    """One line on a run from its `describe` row: state, main metric, PID while it trains, the error of a failure."""
    parts = [f"**{ws.rel(run)}**: `{d['state']}`"]
    if d["metric"]:
        parts.append(f"{d['metric']} = {d['value']:.4f}")
    if d["pid"]:
        parts.append(f"PID {d['pid']}")
    line = " · ".join(parts)
    if d["error"] and d["state"] in ("failed", "stopped"):
        line += f"  \n⚠ {d['error']}"
    return line


def report_parts(run: Path, lang: str) -> tuple[str, str | None, str | None]:
    """(report.md, confusion matrix PNG, loss curve PNG) of a run's evaluation, where present."""
    ev = run / "eval"
    md = ev / "report.md"
    body = without_images(md.read_text(encoding="utf-8")) if md.is_file() else text("no_report", lang)
    cm, lc = ev / "confusion_matrix.png", ev / "loss_curve.png"
    return body, (str(cm) if cm.is_file() else None), (str(lc) if lc.is_file() else None)


def build(ctx: Ctx):
    ws, tr = ctx.ws, ctx.tr
    seen_state = gr.State(None)
    with gr.Row():
        run_pick = tr.reg(
            gr.Dropdown(
                [r["name"] for r in ws.runs()], label=tr("run"), allow_custom_value=True, scale=4, elem_id="tf-run-pick"
            ),
            label="run",
        )
        refresh = tr.reg(gr.Button(tr("refresh"), scale=1, elem_id="tf-runs-refresh"), value="refresh")
    table = tr.reg(
        gr.Dataframe(
            runs_frame(ws.runs(), tr.lang), label=tr("runs_table"), interactive=False, elem_id="tf-runs-table"
        ),
        label="runs_table",
    )
    state_md = gr.Markdown(tr("no_run"), elem_id="tf-run-state")
    with gr.Row():
        stop_btn = tr.reg(gr.Button(tr("stop"), variant="stop", interactive=False, elem_id="tf-stop"), value="stop")
        resume_btn = tr.reg(gr.Button(tr("resume"), interactive=False, elem_id="tf-resume"), value="resume")
    action_md = gr.Markdown(elem_id="tf-run-action")
    with tr.reg(gr.Accordion(tr("curves"), open=True), label="curves"):
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="value", color="series", height=260, elem_id="tf-loss-plot")
            metric_plot = gr.LinePlot(x="step", y="value", color="series", height=260, elem_id="tf-metric-plot")
    log_box = tr.reg(
        gr.Textbox(label=tr("log"), lines=12, max_lines=12, interactive=False, autoscroll=True, elem_id="tf-log"),
        label="log",
    )
    with tr.reg(gr.Accordion(tr("report"), open=True, elem_id="tf-report"), label="report"):
        report_md = gr.Markdown(elem_id="tf-report-md")
        with gr.Row():
            cm_img = tr.reg(
                gr.Image(label=tr("confusion"), interactive=False, height=320, elem_id="tf-confusion"),
                label="confusion",
            )
            lc_img = tr.reg(
                gr.Image(label=tr("loss_curve"), interactive=False, height=320, elem_id="tf-loss-curve"),
                label="loss_curve",
            )
    timer = gr.Timer(2.0)
    ctx.shared.update(run_pick=run_pick)

    def detail(name, lang, last_state):
        """Everything about the chosen run; the report only when the run's state changed (images are heavy)."""
        lang = lang_of(lang)
        keep = [gr.update()] * 3
        off = [gr.update(interactive=False)] * 2
        if not name:
            return [text("no_run", lang), None, None, "", None, *keep, *off]
        try:
            run = ws.run_dir(name)
        except Exception as exc:
            return [message("error", error_text(exc)), None, None, "", None, *keep, *off]
        d = describe(run)
        state = d["state"]
        loss, other = curves(ws, run, d["metric"])
        log = log_tail(run_log(run))
        report = keep if state == last_state else list(report_parts(run, lang))
        # Stop while it trains; Resume for an unfinished run with a checkpoint to continue from
        can_resume = state in ("interrupted", "failed", "stopped") and RunDir(run).last_checkpoint() is not None
        buttons = [gr.update(interactive=state == "running"), gr.update(interactive=can_resume)]
        plots = [drawn(loss_plot, loss), drawn(metric_plot, other)]
        return [state_line(ws, run, d), *plots, log, state, *report, *buttons]

    detail_out = [
        state_md,
        loss_plot,
        metric_plot,
        log_box,
        seen_state,
        report_md,
        cm_img,
        lc_img,
        stop_btn,
        resume_btn,
    ]

    def tick(name, lang, last_state):
        runs = ws.runs()  # every 2 s: listed once for the table and the picker
        return [
            runs_frame(runs, lang_of(lang)),
            gr.update(choices=[r["name"] for r in runs]),
            *detail(name, lang, last_state),
        ]

    timer.tick(tick, [run_pick, ctx.lang, seen_state], [table, run_pick, *detail_out], show_progress="hidden")
    refresh.click(tick, [run_pick, ctx.lang, seen_state], [table, run_pick, *detail_out])

    def choose(name, lang):
        return detail(name, lang, "__changed__")

    run_pick.change(choose, [run_pick, ctx.lang], detail_out, show_progress="hidden")
    # the chosen run goes into the address (?run=NAME): a reload, a bookmark or a second browser opens it again
    run_pick.change(None, [run_pick], None, js=REMEMBER_RUN)

    def pick_row(evt: gr.SelectData, frame):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return frame.iloc[row, 0]
        except (IndexError, KeyError, AttributeError):
            return gr.update()

    table.select(pick_row, [table], [run_pick])

    def action(do, said: str):
        """A button's handler: `do(run)` on the chosen run, its outcome in one line."""

        def handler(name, lang):
            lang = lang_of(lang)
            try:
                run = ws.run_dir(name)
                done = do(run)
            except Exception as exc:
                return message("error", error_text(exc))
            return text(said, lang, run=ws.rel(run), state=done, pid=getattr(done, "pid", ""))

        return handler

    stop_btn.click(action(ws.stop, "stopped_msg"), [run_pick, ctx.lang], [action_md])
    resume_btn.click(action(ws.resume, "resumed_msg"), [run_pick, ctx.lang], [action_md])

    def restore(request: gr.Request):
        """After a reload: the run named in the address (?run=NAME), if it still exists."""
        names = [r["name"] for r in ws.runs()]
        saved = dict(request.query_params).get("run") if request is not None else None
        return gr.update(choices=names, value=saved if saved in names else None)

    ctx.shared["restore_run"] = (restore, [run_pick])
