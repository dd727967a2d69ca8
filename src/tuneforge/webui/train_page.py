"""The Train page's components and events: a form generated from the config schema (webui/fields.py), the YAML it
makes and the command line that runs it, Validate (each problem shown next to the field it names), Save and Start.
What the handlers compute is in webui/train_actions.py."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from tuneforge.webui import fields, form
from tuneforge.webui.i18n import text
from tuneforge.webui.sandbox import slug
from tuneforge.webui.schema_zh import help_text
from tuneforge.webui.train_actions import (
    as_widget,
    cli_line,
    compose,
    data_choices,
    field_of_error,
    model_choices,
    preview_data,
    shipped_configs,
    without_keys,
)
from tuneforge.webui.ui import Ctx, lang_of, message
from tuneforge.webui.workspace import error_text

#: fields shown as pickers at the top of the page rather than inside their section
PICKERS = ("model.name", "data.train")
SECTION_KEYS = {
    "model": "section_model",
    "data": "section_data",
    "train": "section_train",
    "distill": "section_distill",
    "eval": "section_eval",
    "output": "section_output",
}


def build(ctx: Ctx):
    ws, tr = ctx.ws, ctx.tr
    specs = fields.all_fields()
    defaults = {(s.group, s.key): form.to_widget(s, s.default) for s in specs}
    task0, method0 = "classification", "lora"
    base = gr.State(None)

    with gr.Row():
        config_pick = tr.reg(
            gr.Dropdown(
                shipped_configs(ws), label=tr("load_config"), allow_custom_value=True, scale=3, elem_id="tf-config-pick"
            ),
            label="load_config",
        )
        upload = tr.reg(
            gr.File(label=tr("upload_config"), file_types=[".yaml", ".yml"], type="filepath", scale=2, height=130),
            label="upload_config",
        )
        load_btn = tr.reg(gr.Button(tr("load"), scale=1, elem_id="tf-load"), value="load")
    with gr.Row():
        model_pick = tr.reg(
            gr.Dropdown(
                model_choices(),
                value=defaults[("model", "model.name")],
                label=tr("model"),
                allow_custom_value=True,
                elem_id="tf-model",
            ),
            label="model",
        )
        data_pick = tr.reg(
            gr.Dropdown(
                data_choices(ws),
                value=defaults[("data", "data.train")],
                label=tr("train_data"),
                allow_custom_value=True,
                elem_id="tf-data",
            ),
            label="train_data",
        )
        task_pick = tr.reg(
            gr.Dropdown(fields.task_types(), value=task0, label=tr("task"), elem_id="tf-task"), label="task"
        )
        method_pick = tr.reg(
            gr.Dropdown(fields.method_names(), value=method0, label=tr("method"), elem_id="tf-method"), label="method"
        )
    with gr.Row():
        preview_btn = tr.reg(gr.Button(tr("preview"), size="sm", elem_id="tf-preview"), value="preview")
    preview_note = gr.Markdown(elem_id="tf-preview-note")
    preview_table = gr.Dataframe(visible=False, interactive=False, wrap=True, elem_id="tf-preview-table")

    widgets: list = []
    groups: dict[str, list] = {}

    def widget(s: fields.FieldSpec):
        value = defaults[(s.group, s.key)]
        common = {"label": s.key, "info": help_text(s, tr.lang), "elem_id": _elem_id(s), "elem_classes": ["tf-field"]}
        if s.kind == "bool":
            comp = gr.Checkbox(value=bool(value), **common)
        elif s.kind == "choice":
            choices = ([""] if s.optional else []) + list(s.choices)
            comp = gr.Dropdown(choices, value=value, **common)
        elif s.kind in ("int", "float"):
            comp = gr.Textbox(value="" if value is None else str(value), max_lines=1, **common)
        else:
            comp = gr.Textbox(value=value, max_lines=1 if s.kind != "yaml" else 3, **common)
        return tr.reg(comp, info=(help_text(s, "en"), help_text(s, "zh")))

    order = (
        ["model", "data"]
        + [f"task:{t}" for t in fields.task_types()]
        + [f"method:{m}" for m in fields.method_names()]
        + ["train", "distill", "eval", "output"]
    )
    by_group: dict[str, list[fields.FieldSpec]] = {}
    for s in specs:
        by_group.setdefault(s.group, []).append(s)
    made: dict[tuple, object] = {}
    for g in order:
        members = by_group.get(g, [])
        if g.startswith("task:"):
            t = g.split(":", 1)[1]
            members = by_group.get(f"task:{t}", []) + by_group.get(f"data:{t}", [])
            acc = gr.Accordion(
                f"{tr('section_task')}: {t}", open=False, visible=t == task0, elem_id=f"tf-group-task-{t}"
            )
            tr.reg(acc, label=(f"{text('section_task', 'en')}: {t}", f"{text('section_task', 'zh')}: {t}"))
        elif g.startswith("method:"):
            m = g.split(":", 1)[1]
            acc = gr.Accordion(
                f"{tr('section_method')}: {m}", open=True, visible=m == method0, elem_id=f"tf-group-method-{m}"
            )
            tr.reg(acc, label=(f"{text('section_method', 'en')}: {m}", f"{text('section_method', 'zh')}: {m}"))
        else:
            acc = tr.reg(gr.Accordion(tr(SECTION_KEYS[g]), open=False, elem_id=f"tf-group-{g}"), label=SECTION_KEYS[g])
        groups[g] = acc
        with acc:
            for s in members:
                if s.key in PICKERS:
                    continue
                made[(s.group, s.key)] = widget(s)
    for s in specs:  # one component per field, in the order of `specs`
        if s.key == "model.name":
            widgets.append(model_pick)
        elif s.key == "data.train":
            widgets.append(data_pick)
        else:
            widgets.append(made[(s.group, s.key)])

    with gr.Row():
        run_name = tr.reg(
            gr.Textbox(value="sentiment-run", label=tr("run_name"), max_lines=1, elem_id="tf-run-name"),
            label="run_name",
        )
        validate_btn = tr.reg(gr.Button(tr("validate"), elem_id="tf-validate"), value="validate")
        save_btn = tr.reg(gr.Button(tr("save_yaml"), elem_id="tf-save"), value="save_yaml")
        start_btn = tr.reg(gr.Button(tr("start"), variant="primary", elem_id="tf-start"), value="start")
    status = gr.Markdown(elem_id="tf-train-status")
    saved_file = gr.File(visible=False, interactive=False, label="YAML")
    with gr.Row():
        yaml_box = tr.reg(
            gr.Code(language="yaml", label=tr("yaml_preview"), interactive=False, elem_id="tf-yaml"),
            label="yaml_preview",
        )
    cli_box = tr.reg(
        gr.Textbox(label=tr("cli_equivalent"), interactive=False, elem_id="tf-cli"), label="cli_equivalent"
    )

    ctx.shared.update(
        train_widgets=widgets,
        train_specs=specs,
        task_pick=task_pick,
        method_pick=method_pick,
        train_base=base,
        run_name=run_name,
    )

    # --- handlers ----------------------------------------------------------------------------------------------
    def render(task, method, base_raw, name, *values):
        try:
            raw = compose(specs, task, method, base_raw, list(values))
        except ValueError as exc:
            return f"# {exc}", cli_line(ws, name or "run")
        return form.to_yaml(raw), cli_line(ws, name or "run")

    inputs = [task_pick, method_pick, base, run_name, *widgets]
    for comp in [task_pick, method_pick, run_name, *widgets]:
        comp.change(render, inputs, [yaml_box, cli_box], show_progress="hidden", queue=False)

    def switch(task, method, base_raw):
        """Show the chosen task's and method's groups; forget base keys of the groups no longer chosen."""
        shown = {f"task:{task}", f"method:{method}"}
        if isinstance(base_raw, dict):
            keep = {s.key for s in fields.fields_for(task, method)}
            drop = {
                s.key
                for s in specs
                if s.group.split(":")[0] in ("task", "data", "method") and ":" in s.group and s.key not in keep
            }
            base_raw = without_keys(base_raw, drop)
        ups = [gr.update(visible=g in shown) for g in groups if ":" in g]
        return [base_raw, *ups]

    flip = [g for g in groups if ":" in g]
    for comp in (task_pick, method_pick):
        comp.change(switch, [task_pick, method_pick, base], [base, *[groups[g] for g in flip]], queue=False)

    def load(path, uploaded, lang):
        lang = lang_of(lang)
        source = uploaded or path
        try:
            from tuneforge.config.yaml_reader import read_yaml

            if not source:
                raise ValueError("choose a config to load")
            if not uploaded:
                ws.inside(source)
            raw = read_yaml(source)
            task, method, vals = form.form_values(raw)
        except Exception as exc:
            return [gr.update()] * (4 + len(widgets)) + [message("error", error_text(exc))]
        out = []
        for s in specs:
            if s.group in ("task:" + task, "data:" + task, "method:" + method) or ":" not in s.group:
                v = vals.get(s.key, defaults[(s.group, s.key)])
            else:
                v = defaults[(s.group, s.key)]
            out.append(as_widget(s, v))
        name = (raw.get("output") or {}).get("name") or Path(str(source)).stem
        return [raw, task, method, slug(name), *out, text("loaded", lang, path=Path(str(source)).name)]

    load_btn.click(load, [config_pick, upload, ctx.lang], [base, task_pick, method_pick, run_name, *widgets, status])

    def validate(lang, task, method, base_raw, *values):
        from tuneforge.config import config_problems

        lang = lang_of(lang)
        keys = [s.key for s in specs]
        try:
            raw = compose(specs, task, method, base_raw, list(values))
            _, problems = config_problems(raw, environment=True)
        except ValueError as exc:
            problems = [str(exc)]
        named: dict[str, list[str]] = {}
        for p in problems:
            k = field_of_error(p, keys)
            if k:
                named.setdefault(k, []).append(p.split(":", 1)[1].strip() if ":" in p else p)
        ups = []
        for s in specs:
            errs = named.get(s.key)
            ups.append(
                gr.update(
                    info=("⚠ " + "; ".join(errs)) if errs else help_text(s, lang),
                    elem_classes=["tf-field", "tf-field-error"] if errs else ["tf-field"],
                )
            )
        if problems:
            head = text("invalid", lang, n=len(problems))
            summary = f"**⚠ {head}**\n\n" + "\n".join(
                f"- `{p.split(':', 1)[0]}`: {p.split(':', 1)[-1].strip()}" for p in problems
            )
        else:
            summary = "✓ " + text("valid", lang)
        return [summary, *ups]

    validate_btn.click(validate, [ctx.lang, task_pick, method_pick, base, *widgets], [status, *widgets])

    def save(lang, task, method, base_raw, name, *values):
        lang = lang_of(lang)
        try:
            raw = compose(specs, task, method, base_raw, list(values))
            path = ws.write_config(raw, name or "run")
        except Exception as exc:
            return message("error", error_text(exc)), gr.update(), gr.update()
        return (
            text("saved_to", lang, path=ws.rel_or_abs(path)),
            gr.update(value=str(path), visible=True),
            gr.update(choices=shipped_configs(ws)),
        )

    save_btn.click(
        save, [ctx.lang, task_pick, method_pick, base, run_name, *widgets], [status, saved_file, config_pick]
    )

    def start(lang, task, method, base_raw, name, *values):
        lang = lang_of(lang)
        try:
            raw = compose(specs, task, method, base_raw, list(values))
            job, target = ws.start_train(raw, name or "run")
        except Exception as exc:
            return message("error", error_text(exc)), gr.update(), gr.update()
        rel = ws.rel(target)
        return (text("started", lang, run=rel, pid=job.pid), gr.update(selected="runs"), rel)

    ctx.shared["start_event"] = (start, [ctx.lang, task_pick, method_pick, base, run_name, *widgets], status)

    def do_preview(lang, source, *values):
        lang = lang_of(lang)
        vals = {s.key: v for s, v in zip(specs, values)}
        try:
            head, note = preview_data(
                ws, source, vals.get("data.text_column") or None, vals.get("data.label_column") or None, lang
            )
        except Exception as exc:
            return message("error", error_text(exc)), gr.update(visible=False)
        return note, gr.update(value=head, visible=True)

    preview_btn.click(do_preview, [ctx.lang, data_pick, *widgets], [preview_note, preview_table])
    ctx.shared["start_btn"] = start_btn
    ctx.shared["render"] = (render, inputs, [yaml_box, cli_box])


def _elem_id(s: fields.FieldSpec) -> str:
    group = s.group.replace(":", "-")
    return f"tf-f-{group}-{s.key.replace('.', '-')}"
