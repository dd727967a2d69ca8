"""The Export-and-serve page: `tuneforge export` of a finished run with its parity and cost table, and `tuneforge
serve` started and stopped for a run, with the snippet that calls it; both run as commands."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import gradio as gr
import pandas as pd

from tuneforge.training import runlist
from tuneforge.webui.i18n import text
from tuneforge.webui.jobs import free_port
from tuneforge.webui.sandbox import slug
from tuneforge.webui.ui import Ctx, lang_of, message
from tuneforge.webui.workspace import Workspace, error_text

EXPORT_FORMATS = ("merged", "onnx", "int8", "onnx-int8", "gguf")


def export(ws: Workspace, name: str, fmt: str) -> tuple[pd.DataFrame, str, Path]:
    """`tuneforge export RUN --format FMT --out RUNS/.webui/exports/<run>-<fmt> --overwrite`; returns the parity
    and cost table of export.json, the printed summary and the output directory."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"choose a format: {', '.join(EXPORT_FORMATS)}")
    run = ws.run_dir(name)
    out = ws.ui_dir / "exports" / f"{slug(ws.rel(run))}-{fmt}"
    tail = ws.run_command(
        "export",
        ws.command("export", str(run), "--format", fmt, "--out", str(out), "--overwrite"),
        ws.ui_dir / "logs" / f"export-{out.name}.log",
    )
    report = json.loads((out / "export.json").read_text())
    rows = [{"measure": k, "value": v} for k, v in _flat(report) if not isinstance(v, (list, dict))]
    summary = "\n".join(line for line in tail.splitlines() if not line.startswith("$ "))
    return pd.DataFrame(rows), summary, out


def _flat(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flat(v, key + ".")
        else:
            yield key, v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def snippet(url: str, interface: str | None, model: str, input_kind: str = "text") -> str:
    if interface == "classify" and input_kind == "image":
        return (
            f"curl {url}/v1/classify -F model={model} -F file=@photo.jpg\n\n"
            f'# Python\nimport base64, httpx\nimage = base64.b64encode(open("photo.jpg", "rb").read()).decode()\n'
            f'print(httpx.post("{url}/v1/classify", json={{"model": "{model}", "images": [image]}}).json())\n'
        )
    if interface == "chat":
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]}, ensure_ascii=False)
        return (
            f"curl {url}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'\n\n"
            f"# Python (pip install openai)\nfrom openai import OpenAI\n"
            f'client = OpenAI(base_url="{url}/v1", api_key="unused")\n'
            f'reply = client.chat.completions.create(model="{model}", '
            f'messages=[{{"role": "user", "content": "Hello!"}}])\n'
            f"print(reply.choices[0].message.content)\n"
        )
    body = json.dumps({"model": model, "texts": ["A gripping, beautifully acted film."]})
    return (
        f"curl {url}/v1/classify -H 'Content-Type: application/json' -d '{body}'\n\n"
        f'# Python\nimport httpx\nprint(httpx.post("{url}/v1/classify", json={body}).json())\n'
    )


def wait_healthy(url: str, job, timeout: float = 180.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and job.running():
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def build_export(ctx: Ctx):
    ws, tr = ctx.ws, ctx.tr
    servers: dict[str, tuple] = {}
    done = [r["name"] for r in ws.runs() if r["state"] == "completed"]
    with gr.Row():
        run = tr.reg(
            gr.Dropdown(done, label=tr("export_run"), allow_custom_value=True, scale=4, elem_id="tf-export-run"),
            label="export_run",
        )
        refresh = tr.reg(gr.Button(tr("refresh"), scale=1), value="refresh")
    with gr.Row():
        fmt = tr.reg(
            gr.Dropdown(list(EXPORT_FORMATS), value="onnx", label=tr("format"), elem_id="tf-export-format"),
            label="format",
        )
        go = tr.reg(gr.Button(tr("export"), variant="primary", elem_id="tf-export"), value="export")
    export_status = gr.Markdown(elem_id="tf-export-status")
    parity = tr.reg(gr.Dataframe(label=tr("parity"), interactive=False, elem_id="tf-parity"), label="parity")
    with gr.Row():
        port = tr.reg(
            gr.Number(0, precision=0, minimum=0, maximum=65535, label=tr("port"), elem_id="tf-serve-port"), label="port"
        )
        start = tr.reg(gr.Button(tr("serve_start"), variant="primary", elem_id="tf-serve-start"), value="serve_start")
        stop = tr.reg(gr.Button(tr("serve_stop"), variant="stop", elem_id="tf-serve-stop"), value="serve_stop")
    serve_status = gr.Markdown(elem_id="tf-serve-status")
    code = tr.reg(
        gr.Code(label=tr("snippet"), language="shell", interactive=False, elem_id="tf-snippet"), label="snippet"
    )

    def completed():
        return gr.update(choices=[r["name"] for r in ws.runs() if r["state"] == "completed"])

    refresh.click(completed, None, [run])
    ctx.shared["refresh_on_tab"]["export"] = (completed, [run])

    def do_export(name, f, lang):
        lang = lang_of(lang)
        try:
            frame, summary, out = export(ws, name, f)
        except Exception as exc:
            return message("error", error_text(exc)), gr.update()
        return text("exported", lang, path=ws.rel_or_abs(out)) + "\n\n```\n" + summary + "\n```", frame

    go.click(do_export, [run, fmt, ctx.lang], [export_status, parity])

    def do_start(name, p, lang):
        lang = lang_of(lang)
        try:
            path = ws.run_dir(name)
            old = servers.pop(name, None)
            if old is not None:
                old[0].stop()
            chosen = int(p or 0) or free_port()
            job = ws.launch(
                "serve",
                ws.command("serve", str(path), "--port", str(chosen)),
                ws.ui_dir / "logs" / f"serve-{slug(name)}.log",
                None,
            )
            url = f"http://127.0.0.1:{chosen}"
            if not wait_healthy(url, job):
                tail = runlist.log_tail(job.log, 5)
                job.stop()
                raise RuntimeError(f"the server did not start: {tail.splitlines()[-1] if tail else 'no output'}")
            servers[name] = (job, url)
        except Exception as exc:
            return message("error", error_text(exc)), ""
        model = Path(name).name
        return (
            text("serving", lang, run=name, url=url, pid=job.pid),
            snippet(url, runlist.interface(path), model, runlist.input_kind(path)),
        )

    start.click(do_start, [run, port, ctx.lang], [serve_status, code])

    def do_stop(name, lang):
        lang = lang_of(lang)
        entry = servers.pop(name, None) if name in servers else (servers.popitem()[1] if servers else None)
        if entry is None:
            return text("not_serving", lang), ""
        entry[0].stop()
        return text("not_serving", lang), ""

    stop.click(do_stop, [run, ctx.lang], [serve_status, code])
