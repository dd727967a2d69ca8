"""The Data, Compare and Search pages: `tuneforge data inspect`, `tuneforge report` and `tuneforge search`,
run as commands, their reports and plots read back from the directories they write."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from tuneforge.training.runlist import describe, find_runs, log_tail
from tuneforge.webui.i18n import text
from tuneforge.webui.sandbox import slug
from tuneforge.webui.ui import Ctx, lang_of, message
from tuneforge.webui.workspace import Workspace, error_text, without_images

STUDIES = "studies"


def read_report(out: Path) -> tuple[str, list[str]]:
    """(report.md without its image lines, the PNGs beside it): images go to a gallery, where they render."""
    md = out / "report.md"
    body = md.read_text(encoding="utf-8") if md.is_file() else ""
    return without_images(body), [str(p) for p in sorted(out.rglob("*.png"))]


def inspect(ws: Workspace, source: str, overrides: str) -> tuple[str, list[str]]:
    """`tuneforge data inspect SOURCE [overrides] --out RUNS/.webui/data/<name>-<time>`."""
    source = str(source or "").strip()
    if not source:
        raise ValueError("choose a data file, builtin data set or config")
    ws.data_source(source)
    extra = [line.strip() for line in str(overrides or "").splitlines() if line.strip()]
    out = ws.ui_dir / "data" / f"{slug(Path(source).stem or source)}-{ws.stamp()}"
    ws.run_command(
        "data", ws.command("data", "inspect", source, *extra, "--out", str(out)), ws.ui_dir / "logs" / f"{out.name}.log"
    )
    return read_report(out)


def compare(ws: Workspace, names: list[str]) -> tuple[str, list[str]]:
    """`tuneforge report RUN... --out RUNS/.webui/reports/<time>`."""
    if not names:
        raise ValueError("pick at least one run")
    runs = [str(ws.run_dir(n)) for n in names]
    out = ws.ui_dir / "reports" / ws.stamp()
    ws.run_command(
        "report", ws.command("report", *runs, "--out", str(out)), ws.ui_dir / "logs" / f"report-{out.name}.log"
    )
    return read_report(out)


def studies(ws: Workspace) -> list[str]:
    root = ws.runs_dir / STUDIES
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def start_search(ws: Workspace, raw: dict, space_text: str, trials, name: str):
    """Write the Train page's config and the space, then `tuneforge search CONFIG --space SPACE --trials N
    --out RUNS/studies/<name>`; returns the job."""
    import yaml

    from tuneforge.config import validate_config

    name = slug(name or "study")
    validate_config(raw)
    try:
        space = yaml.safe_load(space_text or "")
    except yaml.YAMLError as exc:
        raise ValueError(f"search space: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(space, dict) or not space:
        raise ValueError(
            "search space: write config keys and the values to try, e.g. "
            "train.learning_rate: {float: [1e-4, 1e-2], log: true}"
        )
    config = ws.write_config(raw, f"search-{name}")
    space_path = ws.ui_dir / "configs" / f"search-{name}-space.yaml"
    space_path.write_text(yaml.safe_dump(space, sort_keys=False, allow_unicode=True), encoding="utf-8")
    study_dir = ws.runs_dir / STUDIES / name
    trials = int(trials or 10)
    argv = ws.command(
        "search",
        str(config),
        "--space",
        str(space_path),
        "--trials",
        str(trials),
        "--out",
        str(study_dir),
        "--study",
        name,
    )
    return ws.launch("search", argv, ws.ui_dir / "logs" / f"search-{name}.log", study_dir)


def study_view(ws: Workspace, name: str, lang: str) -> tuple[pd.DataFrame, list[str], str]:
    """(trials table, plots, log tail) of a study, by name (started here) or by path (inside the allowed folders):
    trials.csv once the search wrote it, else its trial runs."""
    # a name: a study started here (RUNS/studies/<name>); a path: one started from a shell (studies/<name>)
    d = ws.inside(name) if "/" in str(name) else ws.inside(ws.runs_dir / STUDIES / slug(name), [ws.runs_dir])
    log = log_tail(ws.ui_dir / "logs" / f"search-{slug(name)}.log", lines=20)
    csv = d / "trials.csv"
    if csv.is_file():
        table = pd.read_csv(csv)
    else:
        rows = [
            {
                text("run", lang): str(p.relative_to(d)),
                text("state", lang): r["state"],
                text("metric", lang): r["metric"] or "",
                text("value", lang): r["value"],
            }
            for p in find_runs(d)
            for r in [describe(p)]
        ]
        table = pd.DataFrame(rows)
    plots = [str(p) for p in sorted((d / "plots").glob("*.png"))] if (d / "plots").is_dir() else []
    return table, plots, log


def shipped_spaces(ws: Workspace) -> list[str]:
    root = ws.cwd / "configs" / "search"
    return [str(p.relative_to(ws.cwd)) for p in sorted(root.glob("*.yaml"))] if root.is_dir() else []


def build_data(ctx: Ctx, data_choices: list[str]):
    ws, tr = ctx.ws, ctx.tr
    with gr.Row():
        source = tr.reg(
            gr.Dropdown(
                data_choices, label=tr("data_source"), allow_custom_value=True, scale=3, elem_id="tf-inspect-source"
            ),
            label="data_source",
        )
        overrides = tr.reg(
            gr.Textbox(label=tr("overrides"), lines=2, scale=2, elem_id="tf-inspect-overrides"), label="overrides"
        )
    go = tr.reg(gr.Button(tr("inspect"), variant="primary", elem_id="tf-inspect"), value="inspect")
    report = gr.Markdown(elem_id="tf-inspect-report")
    gallery = tr.reg(gr.Gallery(label=tr("plots"), columns=2, height=420, elem_id="tf-inspect-plots"), label="plots")

    def run(src, extra):
        try:
            body, images = inspect(ws, src, extra)
        except Exception as exc:
            return message("error", error_text(exc)), []
        return body, images

    go.click(run, [source, overrides], [report, gallery])


def build_compare(ctx: Ctx):
    ws, tr = ctx.ws, ctx.tr
    names = [r["name"] for r in ws.runs()]
    with gr.Row():
        pick = tr.reg(
            gr.Dropdown(names, multiselect=True, label=tr("pick_runs"), scale=4, elem_id="tf-compare-pick"),
            label="pick_runs",
        )
        refresh = tr.reg(gr.Button(tr("refresh"), scale=1), value="refresh")
    go = tr.reg(gr.Button(tr("build_report"), variant="primary", elem_id="tf-compare"), value="build_report")
    report = gr.Markdown(elem_id="tf-compare-report")
    gallery = tr.reg(gr.Gallery(label=tr("plots"), columns=3, height=380, elem_id="tf-compare-plots"), label="plots")
    refresh.click(lambda: gr.update(choices=[r["name"] for r in ws.runs()]), None, [pick])
    ctx.shared["refresh_on_tab"]["compare"] = (lambda: gr.update(choices=[r["name"] for r in ws.runs()]), [pick])

    def run(chosen):
        try:
            body, images = compare(ws, chosen or [])
        except Exception as exc:
            return message("error", error_text(exc)), []
        return body, images

    go.click(run, [pick], [report, gallery])


def build_search(ctx: Ctx):
    ws, tr = ctx.ws, ctx.tr
    spaces = shipped_spaces(ws)

    def load_space(path):
        if not path:
            return ""
        try:
            return Path(ws.inside(path)).read_text(encoding="utf-8")
        except Exception as exc:
            return f"# {error_text(exc)}"

    with gr.Row():
        space_pick = tr.reg(
            gr.Dropdown(
                spaces, value=spaces[0] if spaces else None, label=tr("space_file"), scale=2, elem_id="tf-space-pick"
            ),
            label="space_file",
        )
        trials = tr.reg(
            gr.Number(10, precision=0, minimum=1, label=tr("trials"), scale=1, elem_id="tf-trials"), label="trials"
        )
        name = tr.reg(
            gr.Textbox("study", label=tr("study_name"), max_lines=1, scale=1, elem_id="tf-study-name"),
            label="study_name",
        )
    space = tr.reg(
        gr.Code(
            load_space(spaces[0] if spaces else None),
            language="yaml",
            label=tr("space"),
            interactive=True,
            elem_id="tf-space",
        ),
        label="space",
    )
    go = tr.reg(gr.Button(tr("start_search"), variant="primary", elem_id="tf-search-start"), value="start_search")
    status = gr.Markdown(elem_id="tf-search-status")
    with gr.Row():
        study = tr.reg(
            gr.Dropdown(studies(ws), label=tr("study"), allow_custom_value=True, scale=4, elem_id="tf-study-pick"),
            label="study",
        )
        refresh = tr.reg(gr.Button(tr("refresh"), scale=1, elem_id="tf-study-refresh"), value="refresh")
    table = tr.reg(
        gr.Dataframe(label=tr("trials_table"), interactive=False, elem_id="tf-trials-table"), label="trials_table"
    )
    log = tr.reg(gr.Textbox(label=tr("log"), lines=8, interactive=False, elem_id="tf-search-log"), label="log")
    gallery = tr.reg(gr.Gallery(label=tr("plots"), columns=3, height=360, elem_id="tf-search-plots"), label="plots")

    space_pick.change(load_space, [space_pick], [space])
    widgets, specs = ctx.shared["train_widgets"], ctx.shared["train_specs"]
    task_pick, method_pick, base = ctx.shared["task_pick"], ctx.shared["method_pick"], ctx.shared["train_base"]

    def start(lang, space_text, n, study_name, task, method, base_raw, *values):
        from tuneforge.webui.train_actions import compose

        lang = lang_of(lang)
        try:
            raw = compose(specs, task, method, base_raw, list(values))
            job = start_search(ws, raw, space_text, n, study_name)
        except Exception as exc:
            return message("error", error_text(exc)), gr.update()
        return (
            text("search_started", lang, study=slug(study_name), pid=job.pid),
            gr.update(choices=studies(ws) + [slug(study_name)], value=slug(study_name)),
        )

    go.click(start, [ctx.lang, space, trials, name, task_pick, method_pick, base, *widgets], [status, study])

    def view(study_name, lang):
        if not study_name:
            return gr.update(), gr.update(), gr.update()
        try:
            return study_view(ws, study_name, lang_of(lang))
        except Exception as exc:
            return pd.DataFrame(), [], message("error", error_text(exc))

    ctx.shared["refresh_on_tab"]["search"] = (lambda: gr.update(choices=studies(ws)), [study])
    study.change(view, [study, ctx.lang], [table, gallery, log])
    refresh.click(view, [study, ctx.lang], [table, gallery, log])
    timer = gr.Timer(3.0)
    timer.tick(view, [study, ctx.lang], [table, gallery, log], show_progress="hidden")
