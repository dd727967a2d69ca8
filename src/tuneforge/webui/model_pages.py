"""The Chat, Predict and Export-and-serve pages. Chat and Predict load the run in this process (kept loaded
between requests, one model at a time) through the same functions as `tuneforge chat` / `predict`; export and
serve run as commands."""

from __future__ import annotations

import json
import threading
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

EXPORT_FORMATS = ("merged", "onnx", "int8", "onnx-int8")


class ModelCache:
    """One loaded model at a time (a web UI on a laptop must not keep every run it ever showed in memory)."""

    def __init__(self):
        self._key = None
        self._value = None
        self.lock = threading.Lock()

    def get(self, key, load):
        with self.lock:
            if key != self._key:
                self._key, self._value = None, None  # free the old one before loading the next
                self._value = load()
                self._key = key
            return self._value


def _stamp(path: Path) -> float:
    try:
        return (path / "model" / "tuneforge.json").stat().st_mtime
    except OSError:
        return 0.0


def runs_with(ws: Workspace, interface: str) -> list[str]:
    return [r["name"] for r in ws.runs() if r["state"] == "completed" and r["interface"] == interface]


def chat_targets(ws: Workspace) -> list[str]:
    from tuneforge.models.builtins import BUILTIN_MODELS

    return runs_with(ws, "chat") + [
        f"builtin:{m.alias}" for m in BUILTIN_MODELS.values() if m.kind == "causal_lm" and m.installed()
    ]


def chat_reply(
    ws: Workspace,
    cache: ModelCache,
    target: str,
    history: list[dict],
    message_text: str,
    system: str,
    temperature: float,
    max_new_tokens: int,
):
    """Yield the conversation as the answer streams in (history in the messages format)."""
    from tuneforge.generation import load_chat_model, stream

    if not target:
        raise ValueError("choose a run or a builtin model to chat with")
    if target.startswith("builtin:"):
        where = target
    else:
        where = str(ws.run_dir(target))
    cm = cache.get(("chat", where, _stamp(Path(where))), lambda: load_chat_model(where))
    turns = [
        {"role": m["role"], "content": _content(m["content"])}
        for m in history or []
        if m.get("role") in ("user", "assistant")
    ]
    turns.append({"role": "user", "content": message_text})
    msgs = ([{"role": "system", "content": system}] if system and system.strip() else []) + turns
    settings = {"temperature": float(temperature), "max_new_tokens": int(max_new_tokens)}
    answer = ""
    shown = list(history or []) + [{"role": "user", "content": message_text}, {"role": "assistant", "content": ""}]
    for piece in stream(cm, msgs, settings):
        answer += piece
        shown[-1] = {"role": "assistant", "content": answer}
        yield shown
    yield shown


def _content(content) -> str:
    """Gradio's messages may carry content as a list of parts: the text of them."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def predict_rows(ws: Workspace, cache: ModelCache, name: str, texts: str, lang: str, images=None):
    """(predictions table, probabilities in long form for a bar chart) of a classifier run: for `texts` (one per
    line), or for uploaded `images` (file paths) when the run classifies images."""
    from tuneforge.inference import load_run, predict

    files = [str(getattr(f, "name", f)) for f in (images or [])]
    items = files or [t.strip() for t in str(texts or "").splitlines() if t.strip()]
    if not items:
        raise ValueError("write at least one text, one per line, or upload images")
    run = ws.run_dir(name)
    loaded = cache.get(("predict", str(run), _stamp(run)), lambda: load_run(run))
    rows = predict(loaded, items)
    table, bars = [], []
    for i, (t, r) in enumerate(zip(items, rows), 1):
        probs = r.get("probabilities") if isinstance(r.get("probabilities"), dict) else {}
        label = r.get("label", json.dumps({k: v for k, v in r.items() if k != "text"}, ensure_ascii=False)[:200])
        conf = probs.get(label) if isinstance(label, str) else None
        shown = Path(t).name if files else t
        table.append(
            {
                text("text", lang): shown,
                text("label", lang): label,
                text("confidence", lang): None if conf is None else round(float(conf), 4),
            }
        )
        bars += [
            {"label": str(k), "probability": float(v), "text": f"{i}: {shown[:30]}"}
            for k, v in probs.items()
            if isinstance(v, (int, float))
        ]
    return pd.DataFrame(table), pd.DataFrame(bars, columns=["label", "probability", "text"])


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


def build_chat(ctx: Ctx, cache: ModelCache):
    ws, tr = ctx.ws, ctx.tr
    with gr.Row():
        target = tr.reg(
            gr.Dropdown(
                chat_targets(ws), label=tr("chat_model"), allow_custom_value=True, scale=4, elem_id="tf-chat-target"
            ),
            label="chat_model",
        )
        refresh = tr.reg(gr.Button(tr("refresh"), scale=1), value="refresh")
    with gr.Row():
        system = tr.reg(
            gr.Textbox(label=tr("system_prompt"), lines=2, scale=3, elem_id="tf-chat-system"), label="system_prompt"
        )
        temperature = tr.reg(
            gr.Slider(0.0, 2.0, value=0.7, step=0.05, label=tr("temperature"), scale=1, elem_id="tf-chat-temperature"),
            label="temperature",
        )
        max_new = tr.reg(
            gr.Slider(1, 1024, value=128, step=1, label=tr("max_new_tokens"), scale=1, elem_id="tf-chat-max-new"),
            label="max_new_tokens",
        )
    bot = tr.reg(gr.Chatbot(label=tr("chatbot"), height=380, elem_id="tf-chatbot"), label="chatbot")
    with gr.Row():
        msg = tr.reg(gr.Textbox(label=tr("message"), scale=5, max_lines=4, elem_id="tf-chat-msg"), label="message")
        send = tr.reg(gr.Button(tr("send"), variant="primary", scale=1, elem_id="tf-chat-send"), value="send")
        reset = tr.reg(gr.Button(tr("reset"), scale=1, elem_id="tf-chat-reset"), value="reset")
    status = gr.Markdown(elem_id="tf-chat-status")
    refresh.click(lambda: gr.update(choices=chat_targets(ws)), None, [target])
    ctx.shared["refresh_on_tab"]["chat"] = (lambda: gr.update(choices=chat_targets(ws)), [target])

    def reply(tgt, history, text_in, sys_prompt, temp, max_tokens):
        if not str(text_in or "").strip():
            yield history, gr.update(), ""
            return
        try:
            for shown in chat_reply(ws, cache, tgt, history, text_in, sys_prompt, temp, max_tokens):
                yield shown, "", ""
        except Exception as exc:
            yield history, gr.update(), message("error", error_text(exc))

    args = [target, bot, msg, system, temperature, max_new]
    replies = [send.click(reply, args, [bot, msg, status]), msg.submit(reply, args, [bot, msg, status])]
    # reset stops an answer still streaming: otherwise its next chunk would bring the whole conversation back
    reset.click(lambda: ([], "", ""), None, [bot, msg, status], cancels=replies)


def build_predict(ctx: Ctx, cache: ModelCache):
    ws, tr = ctx.ws, ctx.tr
    with gr.Row():
        run = tr.reg(
            gr.Dropdown(
                runs_with(ws, "classify"),
                label=tr("predict_run"),
                allow_custom_value=True,
                scale=4,
                elem_id="tf-predict-run",
            ),
            label="predict_run",
        )
        refresh = tr.reg(gr.Button(tr("refresh"), scale=1), value="refresh")
    with gr.Row():
        texts = tr.reg(gr.Textbox(label=tr("texts"), lines=5, scale=3, elem_id="tf-predict-texts"), label="texts")
        images = tr.reg(
            gr.File(
                label=tr("images"), file_count="multiple", file_types=["image"], scale=2, elem_id="tf-predict-images"
            ),
            label="images",
        )
    go = tr.reg(gr.Button(tr("predict"), variant="primary", elem_id="tf-predict"), value="predict")
    status = gr.Markdown(elem_id="tf-predict-status")
    table = tr.reg(
        gr.Dataframe(label=tr("predictions"), interactive=False, wrap=True, elem_id="tf-predict-table"),
        label="predictions",
    )
    bars = tr.reg(
        gr.BarPlot(
            x="text",
            y="probability",
            color="label",
            label=tr("probabilities"),
            height=280,
            y_lim=[0, 1],
            elem_id="tf-predict-bars",
        ),
        label="probabilities",
    )
    refresh.click(lambda: gr.update(choices=runs_with(ws, "classify")), None, [run])
    ctx.shared["refresh_on_tab"]["predict"] = (lambda: gr.update(choices=runs_with(ws, "classify")), [run])

    def go_predict(name, items, files, lang):
        try:
            frame, probs = predict_rows(ws, cache, name, items, lang_of(lang), files)
        except Exception as exc:
            return message("error", error_text(exc)), gr.update(), gr.update()
        return "", frame, probs

    go.click(go_predict, [run, texts, images, ctx.lang], [status, table, bars])


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
