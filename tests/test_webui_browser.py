"""The web UI end to end in a real headless browser: Playwright driving Debian's Chromium against
`tuneforge webui` started as a user would (its own process, a runs folder, a data folder).

Without Playwright or Chromium these tests are skipped, except under TUNEFORGE_REQUIRE_BROWSER=1 (set by
`.ci/run`, which installs both), where they fail. Screenshots of every step are written to
test-artifacts/webui/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sft_common import train_tiny_sft_run

from conftest import make_sentiment_rows

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("TUNEFORGE_CHROMIUM", "/usr/lib/chromium/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "webui"


def _need(reason: str):
    if os.environ.get("TUNEFORGE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (TUNEFORGE_REQUIRE_BROWSER=1: the browser tests must run here)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        _need(f"Chromium not found at {CHROMIUM} (apt-get install chromium fonts-noto-cjk)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture(scope="module")
def ui(tiny_bert, tmp_path_factory):
    """A web UI over a fresh runs folder, with a tiny chat run already trained (through the CLI) and a small
    labelled csv in its data folder. Yields (url, workspace root)."""
    import pandas as pd
    import yaml

    root = tmp_path_factory.mktemp("webui")
    (root / "runs").mkdir()
    pd.DataFrame(make_sentiment_rows(240)).to_csv(root / "sentiment.csv", index=False)
    shutil.copytree(tiny_bert, root / "tiny-bert")
    chat = Path(train_tiny_sft_run(root / "sft"))
    shutil.move(str(chat), root / "runs" / "tiny-chat")
    (root / "configs" / "search").mkdir(parents=True)
    (root / "configs" / "search" / "tiny-space.yaml").write_text(
        yaml.safe_dump({"train.learning_rate": {"float": [1e-3, 1e-2], "log": True}})
    )
    port = _free_port()
    log = open(root / "webui.log", "wb")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "webui", "--port", str(port), "--out", "runs", "--data-dir", str(root)],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    import urllib.request

    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("tuneforge webui exited: " + (root / "webui.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        pytest.fail("tuneforge webui did not answer within 120 s")
    yield url, root
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()


@pytest.fixture
def classifier_run(ui) -> str:
    """`ui-run`: trained from the form by the first test; trained through the CLI when that test did not run."""
    import yaml

    from conftest import run_cli

    root = ui[1]
    if not (root / "runs" / "ui-run" / "model").is_dir():
        cfg = {
            "model": {"name": "tiny-bert"},
            "data": {"train": "sentiment.csv", "max_length": 32},
            "task": {"type": "classification"},
            "method": {"name": "lora"},
            "train": {"max_steps": 14, "batch_size": 16, "learning_rate": 0.01, "logging_steps": 2},
            "output": {"dir": "runs/ui-run"},
        }
        (root / "ui-run.yaml").write_text(yaml.safe_dump(cfg))
        proc = run_cli("train", "ui-run.yaml", cwd=str(root))
        assert proc.returncode == 0, proc.stderr[-2000:]
    return "ui-run"


@pytest.fixture
def page(browser, ui):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(ui[0])
    pg.wait_for_selector("#tf-yaml")
    yield pg
    ctx.close()


# --- helpers ----------------------------------------------------------------------------------------------------


def box(pg, elem_id: str):
    return pg.locator(f"#{elem_id} textarea, #{elem_id} input").first


def fill(pg, elem_id: str, value: str, enter: bool = False):
    f = box(pg, elem_id)
    f.click()
    f.fill(value)
    f.press("Enter") if enter else f.blur()


def choose(pg, elem_id: str, value: str):
    """Pick `value` from a dropdown's option list (typed to filter it, then clicked)."""
    f = box(pg, elem_id)
    f.click()
    f.fill(value)
    pg.get_by_role("option", name=value).click()
    pg.locator("#tf-title").click()  # closes an option list left open (multiselect)


def tab(pg, name: str):
    pg.get_by_role("tab", name=name).click()


def shot(pg, name: str):
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_text(pg, elem_id: str, pattern: str, timeout: float = 180) -> str:
    """Wait until the element's text matches `pattern` (the page refreshes itself every 2 s)."""
    deadline = time.time() + timeout
    got = ""
    while time.time() < deadline:
        got = pg.locator(f"#{elem_id}").inner_text()
        if re.search(pattern, got):
            return got
        pg.wait_for_timeout(500)
    raise AssertionError(f"#{elem_id} never matched {pattern!r}; last text: {got[:500]!r}")


def image_shown(pg, elem_id: str):
    """The first image inside the element is loaded (scrolled to first: images load lazily)."""
    img = pg.locator(f"#{elem_id} img").first
    img.wait_for(state="attached")
    img.scroll_into_view_if_needed()
    pg.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=img.element_handle())


def fill_train_form(pg, name: str, max_steps: int, extra=()):
    fill(pg, "tf-model", "tiny-bert", enter=True)
    fill(pg, "tf-data", "sentiment.csv", enter=True)
    pg.get_by_text("Data settings", exact=True).click()
    fill(pg, "tf-f-data-data-max_length", "32")
    pg.get_by_text("Training", exact=True).click()
    fill(pg, "tf-f-train-train-max_steps", str(max_steps))
    fill(pg, "tf-f-train-train-learning_rate", "0.01")
    fill(pg, "tf-f-train-train-batch_size", "16")
    fill(pg, "tf-f-train-train-logging_steps", "2")
    for elem, value in extra:
        fill(pg, elem, value)
    fill(pg, "tf-run-name", name)


# --- tests ------------------------------------------------------------------------------------------------------


def test_train_from_the_form_to_the_report(page, ui):
    pg, root = page, ui[1]
    fill_train_form(pg, "ui-run", 14)
    # a bad value: Validate shows the problem next to the field it names, and the run does not start
    fill(pg, "tf-f-train-train-batch_size", "abc")
    pg.click("#tf-validate")
    wait_text(pg, "tf-train-status", r"1 problem")
    assert "is not a number" in pg.locator("#tf-f-train-train-batch_size").inner_text()
    assert "tf-field-error" in (pg.locator("#tf-f-train-train-batch_size").get_attribute("class") or "")
    shot(pg, "01-validate-error")
    fill(pg, "tf-f-train-train-batch_size", "16")
    pg.click("#tf-validate")
    wait_text(pg, "tf-train-status", r"valid")
    assert "is not a number" not in pg.locator("#tf-f-train-train-batch_size").inner_text()
    # the YAML preview and the command line say what will run
    yaml_text = wait_text(pg, "tf-yaml", r"max_steps: 14")
    assert "name: tiny-bert" in yaml_text and "batch_size: 16" in yaml_text
    assert box(pg, "tf-cli").input_value() == "tuneforge train runs/.webui/configs/ui-run.yaml output.dir=runs/ui-run"
    shot(pg, "02-train-form")
    pg.click("#tf-start")
    # Start moves to the Runs page with the new run chosen; it completes with curves and a report
    wait_text(pg, "tf-run-state", r"ui-run")
    wait_text(pg, "tf-run-state", r"completed", timeout=240)
    pg.wait_for_timeout(2500)
    assert pg.locator("#tf-loss-plot .mark-line path").count() >= 1, "no loss curve was drawn"
    # the metric chart shows every evaluation: points while a series has one (a line needs two), else lines
    rows = [json.loads(line) for line in (root / "runs" / "ui-run" / "metrics.jsonl").read_text().splitlines()]
    mark = "symbol" if sum("eval_accuracy" in r for r in rows) == 1 else "line"
    assert pg.locator(f"#tf-metric-plot .mark-{mark}.plot_marks path").count() >= 1, "no metric was drawn"
    wait_text(pg, "tf-report-md", r"accuracy")
    image_shown(pg, "tf-confusion")
    assert "tuneforge: done" in box(pg, "tf-log").input_value()
    shot(pg, "03-run-completed")
    # the UI's run is the CLI's run: the same files, the same config
    run = root / "runs" / "ui-run"
    assert (run / "status.json").is_file() and (run / "model" / "tuneforge.json").is_file()
    import yaml

    saved = yaml.safe_load((root / "runs" / ".webui" / "configs" / "ui-run.yaml").read_text())
    assert saved["train"]["max_steps"] == 14 and saved["model"]["name"] == "tiny-bert"


def test_stop_a_running_run_and_find_it_after_a_reload(page, ui):
    pg, root = page, ui[1]
    fill_train_form(pg, "long-run", 100000, extra=[("tf-f-train-train-save_steps", "")])
    pg.click("#tf-start")
    wait_text(pg, "tf-run-state", r"long-run")
    wait_text(pg, "tf-run-state", r"running", timeout=120)
    # a reload mid-run: the browser finds the run it was following, still running
    pg.reload()
    pg.wait_for_selector("#tf-yaml")
    tab(pg, "Runs")
    wait_text(pg, "tf-run-state", r"long-run.*running", timeout=60)
    deadline = time.time() + 120
    while time.time() < deadline and pg.locator("#tf-loss-plot .mark-line path").count() == 0:
        pg.wait_for_timeout(1000)
    shot(pg, "04-running-after-reload")
    pg.click("#tf-stop")
    wait_text(pg, "tf-run-action", r"stopped", timeout=90)
    wait_text(pg, "tf-run-state", r"stopped")
    shot(pg, "05-stopped")
    from tuneforge.training.rundir import RunDir

    assert RunDir(root / "runs" / "long-run").state() == "stopped"


def test_predict_chat_and_chinese(page, ui, classifier_run):
    pg = page
    tab(pg, "Predict")
    fill(pg, "tf-predict-run", "ui-run", enter=True)
    box(pg, "tf-predict-texts").fill("great wonderful film\nawful boring plot")
    pg.click("#tf-predict")
    got = wait_text(pg, "tf-predict-table", r"(positive|negative)")
    assert "great wonderful film" in got
    pg.locator("#tf-predict-bars .mark-rect path").first.wait_for()
    shot(pg, "06-predict")

    tab(pg, "Chat")
    fill(pg, "tf-chat-target", "tiny-chat", enter=True)
    fill(pg, "tf-chat-msg", "What is your name?", enter=True)
    wait_text(pg, "tf-chatbot", r"What is your name\?")
    pg.locator('#tf-chatbot [data-testid="bot"]').first.wait_for()
    assert "⚠" not in pg.locator("#tf-chat-status").inner_text()
    shot(pg, "07-chat")
    # reset while the answer may still stream: the conversation goes and stays gone (the stream is cancelled; before,
    # its next chunk brought the whole conversation back on a loaded machine)
    pg.click("#tf-chat-reset")
    wait_text(pg, "tf-chatbot", r"^(?![\s\S]*What is your name\?)", timeout=20)
    pg.wait_for_timeout(3000)
    assert "What is your name?" not in pg.locator("#tf-chatbot").inner_text()

    # Chinese: every label switches in place; Chinese text in data and answers renders
    pg.get_by_label("中文").check()
    wait_text(pg, "tf-tabs", r"训练")
    assert "运行记录" in pg.locator("#tf-tabs").inner_text()
    tab(pg, "预测")
    box(pg, "tf-predict-texts").fill("这部电影很好看，演员很棒")
    pg.click("#tf-predict")
    wait_text(pg, "tf-predict-table", r"这部电影很好看")
    assert "文本" in pg.locator("#tf-predict-table").inner_text()
    shot(pg, "08-chinese")


def test_data_compare_export_serve_and_search(page, ui, classifier_run):
    pg, root = page, ui[1]
    tab(pg, "Data")
    fill(pg, "tf-inspect-source", "sentiment.csv", enter=True)
    pg.click("#tf-inspect")
    wait_text(pg, "tf-inspect-report", r"(?i)class", timeout=240)
    image_shown(pg, "tf-inspect-plots")
    shot(pg, "09-data")

    tab(pg, "Compare")
    choose(pg, "tf-compare-pick", "ui-run")
    pg.click("#tf-compare")
    wait_text(pg, "tf-compare-report", r"ui-run", timeout=120)
    shot(pg, "10-compare")

    tab(pg, "Export and serve")
    fill(pg, "tf-export-run", "ui-run", enter=True)
    pg.click("#tf-export")
    wait_text(pg, "tf-export-status", r"(Exported|⚠)", timeout=300)
    assert "Exported" in pg.locator("#tf-export-status").inner_text(), pg.locator("#tf-export-status").inner_text()
    assert "label_agreement" in pg.locator("#tf-parity").inner_text()
    pg.click("#tf-serve-start")
    wait_text(pg, "tf-serve-status", r"(Serving|⚠)", timeout=180)
    status = pg.locator("#tf-serve-status").inner_text()
    assert "Serving" in status, status
    url = re.search(r"http://127\.0\.0\.1:\d+", status).group(0)
    import httpx

    reply = httpx.post(f"{url}/v1/classify", json={"texts": ["great film"]}, timeout=30).json()
    assert reply["results"][0]["label"] in ("positive", "negative")
    assert "/v1/classify" in pg.locator("#tf-snippet").inner_text()
    shot(pg, "11-export-serve")
    pg.click("#tf-serve-stop")
    wait_text(pg, "tf-serve-status", r"No server")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=3)

    tab(pg, "Train")
    fill_train_form(pg, "search-base", 4)
    tab(pg, "Search")
    choose(pg, "tf-space-pick", "configs/search/tiny-space.yaml")
    wait_text(pg, "tf-space", r"learning_rate")
    fill(pg, "tf-trials", "2")
    fill(pg, "tf-study-name", "ui-study")
    pg.click("#tf-search-start")
    wait_text(pg, "tf-search-status", r"ui-study")
    wait_text(pg, "tf-trials-table", r"(?i)(complete|pruned)", timeout=300)
    deadline = time.time() + 300
    while time.time() < deadline and not (root / "runs" / "studies" / "ui-study" / "trials.csv").is_file():
        pg.wait_for_timeout(2000)
    assert (root / "runs" / "studies" / "ui-study" / "trials.csv").is_file()
    pg.wait_for_timeout(4000)
    shot(pg, "12-search")


def test_paths_outside_the_folders_are_refused(page, ui):
    pg = page
    fill(pg, "tf-data", "../../etc/passwd", enter=True)
    pg.click("#tf-preview")
    wait_text(pg, "tf-preview-note", r"outside the folders")


def test_a_metric_evaluated_once_is_drawn(page, ui):
    """A line needs two points: a run with one evaluation shows its metrics as points instead of an empty chart."""
    run = ui[1] / "runs" / "one-eval"
    run.mkdir()
    try:
        (run / "status.json").write_text(json.dumps({"state": "completed"}))
        rows = [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}, {"step": 2, "eval_accuracy": 0.8}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        pg = page
        tab(pg, "Runs")
        fill(pg, "tf-run-pick", "one-eval", enter=True)
        wait_text(pg, "tf-run-state", r"one-eval")
        pg.locator("#tf-metric-plot .mark-symbol.plot_marks path").first.wait_for()
        assert pg.locator("#tf-loss-plot .mark-line.plot_marks path").count() >= 1, "the loss is not a line"
        shot(pg, "13-one-evaluation")
    finally:
        shutil.rmtree(run)
