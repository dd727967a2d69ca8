"""`tuneforge webui`: the pages in one Gradio app, the language switch, and a safe launch.

Gradio is imported only here and in the page modules, which only `tuneforge webui` imports: the rest of the
command line never pays for it. Its analytics are off (GRADIO_ANALYTICS_ENABLED=False before the import, and on
the Blocks): the machines this runs on often have no internet, and a UI must not phone home anyway.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time

from tuneforge.errors import ConfigError, ServeError

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("GRADIO_TELEMETRY_ENABLED", "False")

import gradio as gr

from tuneforge.webui import export_page, model_pages, runs_page, tools_page, train_actions, train_page
from tuneforge.webui.i18n import LANG_NAMES, LANGS, text
from tuneforge.webui.ui import Ctx, Tr, lang_of
from tuneforge.webui.workspace import Workspace

REMEMBER_LANG = """(lang) => {
  const url = new URL(window.location.href);
  url.searchParams.set("lang", lang);
  window.history.replaceState(null, "", url);
}"""

CSS = """
.tf-field-error textarea, .tf-field-error input { border-color: #d33 !important; }
.tf-field-error [data-testid="block-info"], .tf-field-error .info { color: #d33 !important; }
body, .gradio-container { font-family: "Noto Sans", "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei",
  "PingFang SC", sans-serif; }
"""


def build_app(ws: Workspace, lang: str = "en") -> gr.Blocks:
    """The whole web UI over `ws`, labelled in `lang` (switchable in the page)."""
    lang = lang_of(lang)
    tr = Tr(lang)
    cache = model_pages.ModelCache()
    with gr.Blocks(title="tuneforge", analytics_enabled=False) as demo:
        session_lang = gr.State(lang)
        ctx = Ctx(ws, tr, session_lang)
        ctx.shared["refresh_on_tab"] = {}
        tab_of = {}
        with gr.Row():
            tr.reg(
                gr.Markdown(f"## {tr('title')}", elem_id="tf-title"),
                value=(f"## {text('title', 'en')}", f"## {text('title', 'zh')}"),
            )
            switch = tr.reg(
                gr.Radio(
                    [(LANG_NAMES[code], code) for code in LANGS],
                    value=lang,
                    label=tr("language"),
                    elem_id="tf-lang",
                    scale=0,
                    min_width=280,
                ),
                label="language",
            )
        intro = gr.Markdown(tr("subtitle", runs=ws.runs_dir), elem_id="tf-intro")
        pages = [
            ("train", lambda: train_page.build(ctx)),
            ("runs", lambda: runs_page.build(ctx)),
            (
                "data",
                lambda: tools_page.build_data(ctx, train_actions.data_choices(ws) + train_actions.shipped_configs(ws)),
            ),
            ("compare", lambda: tools_page.build_compare(ctx)),
            ("search", lambda: tools_page.build_search(ctx)),
            ("chat", lambda: model_pages.build_chat(ctx, cache)),
            ("predict", lambda: model_pages.build_predict(ctx, cache)),
            ("export", lambda: export_page.build_export(ctx)),
        ]
        with gr.Tabs(elem_id="tf-tabs") as tabs:
            for page_id, build_page in pages:
                with tr.reg(
                    gr.Tab(tr(f"tab_{page_id}"), id=page_id, elem_id=f"tf-tab-{page_id}"), label=f"tab_{page_id}"
                ) as tab_of[page_id]:
                    build_page()

        # a page's run pickers list the runs that exist when the page is opened
        for page_id, (fn, outputs) in ctx.shared["refresh_on_tab"].items():
            tab_of[page_id].select(fn, None, outputs, show_progress="hidden")

        # Start switches to the Runs page with the new run chosen
        start_fn, start_inputs, start_status = ctx.shared["start_event"]
        ctx.shared["start_btn"].click(start_fn, start_inputs, [start_status, tabs, ctx.shared["run_pick"]])

        translated = tr.components

        def relabel(code):
            code = lang_of(code)
            return [code, gr.update(value=text("subtitle", code, runs=ws.runs_dir)), *tr.updates(code)]

        switch.change(relabel, [switch], [session_lang, intro, *translated], show_progress="hidden")

        restore_fn, restore_out = ctx.shared["restore_run"]
        render_fn, render_in, render_out = ctx.shared["render"]
        # the form's YAML preview is drawn once the page is there
        demo.load(render_fn, render_in, render_out)

        def from_url(request: gr.Request):
            """`?run=NAME` reopens that run on the Runs page, `?lang=zh` picks the language (a reload keeps both)."""
            wanted = dict(request.query_params).get("lang") if request is not None else None
            return [restore_fn(request), wanted if wanted in LANGS else gr.update()]

        demo.load(from_url, None, [*restore_out, switch])
        switch.change(None, [switch], None, js=REMEMBER_LANG)
    return demo


def check_host(host: str, password: str | None, insecure: bool) -> None:
    """A UI that can start training and read files is for this machine only, unless a password protects it
    (or the user says --insecure). Raises ConfigError."""
    loopback = host in ("localhost",)
    try:
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not loopback and not password and not insecure:
        raise ConfigError(
            f"--host {host} makes the web UI reachable from other machines, and it can start "
            f"training and read files: give --password (or set TUNEFORGE_WEBUI_PASSWORD), or say "
            f"--insecure if the network is trusted"
        )


@contextlib.contextmanager
def patient_localhost_check(seconds: float = 120.0):
    """Let Gradio's launch() wait for its own server. launch() asks the page it just started for `/` with a 3-second
    timeout, and on a timeout stops with "When localhost is not accessible, a shareable link must be created": this
    app's page takes ~2 s to answer on an idle 2-core machine (it carries every task's form), so a busy one fails to
    start. Inside this block Gradio's check (gradio.networking.url_ok) asks with a 30-second timeout, again until the
    page answers or `seconds` pass."""
    from gradio import networking

    original = getattr(networking, "url_ok", None)
    if original is None:  # a Gradio without the check: nothing to wait for
        yield
        return

    def url_ok(url: str) -> bool:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if httpx.head(url, timeout=30, verify=False).status_code in (200, 401, 301, 302, 303, 307, 308):
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return False

    networking.url_ok = url_ok
    try:
        yield
    finally:
        networking.url_ok = original


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    runs_dir: str = "runs",
    data_dirs=(),
    password: str | None = None,
    insecure: bool = False,
    lang: str = "en",
    user: str = "tuneforge",
    block: bool = True,
):
    """Build and serve the web UI. Returns the Blocks (with `block=False`, the server runs in a thread)."""
    check_host(host, password, insecure)
    if lang not in LANGS:
        raise ConfigError(f"--lang: '{lang}' is not one of {', '.join(LANGS)}")
    ws = Workspace(runs_dir, data_dirs)
    demo = build_app(ws, lang)
    demo.queue(default_concurrency_limit=4)
    try:
        with patient_localhost_check():
            demo.launch(
                server_name=host,
                server_port=port,
                auth=(user, password) if password else None,
                allowed_paths=[str(ws.runs_dir)],
                prevent_thread_lock=not block,
                quiet=False,
                show_error=True,
                css=CSS,
                footer_links=[],
            )
    except OSError as exc:  # the port is taken (Gradio: "Cannot find empty port"), or the address is not ours
        raise ServeError(f"cannot listen on {host}:{port} ({str(exc).split('.')[0]}); choose another --port") from None
    return demo
