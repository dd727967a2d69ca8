"""The Chat and Predict pages: they load the run in this process (kept loaded between requests, one model at a
time) through the same functions as `tuneforge chat` / `predict` (the Export-and-serve page: webui/export_page.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gradio as gr
import pandas as pd

from tuneforge.webui.i18n import text
from tuneforge.webui.ui import Ctx, lang_of, message
from tuneforge.webui.workspace import Workspace, error_text


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


def predict_rows(
    ws: Workspace, cache: ModelCache, name: str, texts: str, lang: str, images=None, prompt: str | None = None
):
    """(predictions table, probabilities in long form for a bar chart) of a classifier run: for `texts` (one per
    line), or for uploaded `images` (file paths) when the run classifies images. With a `prompt`, a run that scores
    answers (a reward model) scores each line as an answer to it, as it was trained (`tuneforge.inference.score`);
    another run refuses in one line."""
    from tuneforge.inference import load_run, predict, score

    files = [str(getattr(f, "name", f)) for f in (images or [])]
    items = files or [t.strip() for t in str(texts or "").splitlines() if t.strip()]
    if not items:
        raise ValueError("write at least one text, one per line, or upload images")
    run = ws.run_dir(name)
    loaded = cache.get(("predict", str(run), _stamp(run)), lambda: load_run(run))
    prompt = (prompt or "").strip()
    if prompt and not files:
        rows = [{"text": t, "score": s} for t, s in zip(items, score(loaded, [prompt] * len(items), items))]
    else:
        rows = predict(loaded, items)
    table, bars = [], []
    for i, (t, r) in enumerate(zip(items, rows), 1):
        probs = r.get("probabilities") if isinstance(r.get("probabilities"), dict) else {}
        if "label" in r:
            label = r["label"]
        elif isinstance(r.get("score"), (int, float)):  # a reward model: its score is the prediction
            label = round(float(r["score"]), 4)
        else:
            label = json.dumps({k: v for k, v in r.items() if k != "text"}, ensure_ascii=False)[:200]
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
    prompt = tr.reg(gr.Textbox(label=tr("score_prompt"), lines=2, elem_id="tf-predict-prompt"), label="score_prompt")
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

    def go_predict(name, items, files, lang, prompt_text):
        try:
            frame, probs = predict_rows(ws, cache, name, items, lang_of(lang), files, prompt_text)
        except Exception as exc:
            return message("error", error_text(exc)), gr.update(), gr.update()
        return "", frame, probs

    go.click(go_predict, [run, texts, images, ctx.lang, prompt], [status, table, bars])
