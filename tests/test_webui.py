"""The web UI without a browser: its translations, its path safety, its host check, the Train form's YAML
round trip as the widgets show values, and the workspace that starts, refuses and stops runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from tuneforge.config.yaml_reader import read_yaml  # noqa: E402
from tuneforge.errors import ConfigError, PathError, RunDirError  # noqa: E402
from tuneforge.training.rundir import RunDir  # noqa: E402
from tuneforge.training.runlock import pid_alive  # noqa: E402
from tuneforge.webui import fields, form  # noqa: E402
from tuneforge.webui.i18n import LANGS, STRINGS, text  # noqa: E402
from tuneforge.webui.sandbox import slug  # noqa: E402
from tuneforge.webui.workspace import Workspace, without_images  # noqa: E402

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "search" not in p.relative_to(REPO / "configs").parts)


def test_every_string_has_english_and_chinese():
    assert LANGS == ("en", "zh")
    for key, (en, zh) in STRINGS.items():
        assert en.strip() and zh.strip(), key
        # the Chinese string is Chinese (keeps `tuneforge`, paths and placeholders, but has Han characters)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh), (key, zh)
        assert sorted(_fields(en)) == sorted(_fields(zh)), (key, "placeholders differ")
    assert text("started", "zh", run="r", pid=1).startswith("已开始")
    assert text("started", "fr", run="r", pid=1).startswith("Started")  # unknown language: English


def _fields(s: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(s) if f]


def test_every_key_used_by_the_pages_exists():
    import re

    used = set()
    for path in (REPO / "src" / "tuneforge" / "webui").glob("*.py"):
        used |= set(re.findall(r"""\btr\(\s*["']([a-z_]+)["']""", path.read_text()))
        used |= set(re.findall(r"""\btext\(\s*["']([a-z_]+)["']""", path.read_text()))
        used |= set(re.findall(r"""label=["']([a-z_]+)["']\)""", path.read_text()))
    assert used, "no translated strings found"
    assert used <= set(STRINGS), sorted(used - set(STRINGS))


def test_paths_stay_inside_the_runs_and_data_folders(tmp_path):
    data, runs, outside = tmp_path / "data", tmp_path / "runs", tmp_path / "secret"
    for d in (data, outside):
        d.mkdir()
    (data / "train.csv").write_text("text,label\na,b\n")
    (outside / "keys.txt").write_text("x")
    (data / "link").symlink_to(outside)
    ws = Workspace(runs, [data], cwd=data)
    assert ws.inside("train.csv") == (data / "train.csv").resolve()
    assert ws.data_source("builtin:rotten-tomatoes") == "builtin:rotten-tomatoes"
    for bad in (
        "../secret/keys.txt",
        str(outside / "keys.txt"),
        "link/keys.txt",
        "/etc/passwd",
        "train.csv/../../secret",
    ):
        with pytest.raises(PathError, match="outside the folders"):
            ws.inside(bad)
    with pytest.raises(PathError, match="does not exist"):
        ws.inside("missing.csv")
    # run directories: inside the runs folder only, and only tuneforge runs
    with pytest.raises(PathError):
        ws.run_dir("../data")
    (runs / "notarun").mkdir()
    with pytest.raises(RunDirError, match="not a tuneforge run"):
        ws.run_dir("notarun")
    assert slug("../../etc/x y") == "etc-x-y" and slug("..") == "run"


def test_a_public_address_needs_a_password_or_insecure():
    from tuneforge.webui.app import check_host

    check_host("127.0.0.1", None, False)
    check_host("localhost", None, False)
    check_host("::1", None, False)
    with pytest.raises(ConfigError, match="--password"):
        check_host("0.0.0.0", None, False)
    check_host("0.0.0.0", "s3cret", False)
    check_host("192.168.1.5", None, True)


def test_cli_refuses_a_public_address_in_one_line(capsys):
    from tuneforge.cli.app import main

    code = main(["webui", "--host", "0.0.0.0", "--out", "unused-runs"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --host 0.0.0.0") and "\n" not in err
    assert not Path("unused-runs").exists()
    code = main(["webui", "--lang", "fr"])
    assert code == 2 and "--lang" in capsys.readouterr().err


def test_the_cli_does_not_import_gradio_until_webui():
    code = "import sys, tuneforge.cli.app, tuneforge.cli.commands; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_yaml_to_form_widgets_to_yaml_round_trips(path):
    """What the page does with a loaded config: widget values as the components hold them (numbers as text in
    text boxes), then back to YAML: exactly the config that was loaded."""
    from tuneforge.webui.train_actions import as_widget, compose

    raw = read_yaml(path)
    task, method, values = form.form_values(raw)
    specs = fields.all_fields()
    shown = []
    for s in specs:
        v = (
            values.get(s.key)
            if s.group in (f"task:{task}", f"data:{task}", f"method:{method}") or ":" not in s.group
            else form.to_widget(s, s.default)
        )
        shown.append(as_widget(s, v))
    assert compose(specs, task, method, raw, shown) == raw
    # and without the file (a form filled in by hand): the same run
    from tuneforge.config import validate_config

    rebuilt = compose(specs, task, method, None, shown)
    assert validate_config(rebuilt).model_dump() == validate_config(raw).model_dump()


def test_the_form_has_a_component_for_every_field(tmp_path):
    from tuneforge.webui.app import build_app

    demo = build_app(Workspace(tmp_path / "runs", [tmp_path], cwd=tmp_path), "zh")
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    from tuneforge.webui.train_page import PICKERS, _elem_id

    missing = [s.key for s in fields.all_fields() if s.key not in PICKERS and _elem_id(s) not in ids]
    assert not missing
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert "训练" in labels and "运行记录" in labels  # built in Chinese with --lang zh


def test_validation_problems_name_their_field():
    from tuneforge.config import config_problems
    from tuneforge.webui.train_actions import field_of_error

    keys = [s.key for s in fields.all_fields()]
    _, problems = config_problems(
        {
            "task": {"type": "classification"},
            "method": {"name": "lora", "r": 0},
            "train": {"batch_size": 0, "eval_strategy": "steps"},
            "data": {"nosuch": 1},
        }
    )
    named = {field_of_error(p, keys) for p in problems}
    assert {"train.batch_size", "method.r"} <= named, problems
    assert any(p.startswith("data.nosuch: unknown key") for p in problems)
    _, problems = config_problems({"train": {"eval_strategy": "steps"}})
    assert [field_of_error(p, keys) for p in problems] == ["train.eval_steps"], problems
    assert field_of_error("train.early_stopping.patience: bad", keys) == "train.early_stopping.patience"


def test_start_refuses_a_busy_or_existing_run_and_stop_ends_the_process_group(tmp_path):
    ws = Workspace(tmp_path / "runs", [tmp_path], cwd=tmp_path)
    raw = {"task": {"type": "classification"}, "method": {"name": "lora"}}
    target = ws.runs_dir / "busy"
    target.mkdir()
    # a live process training there (this test's own PID holds the lock)
    run = RunDir(target)
    run.acquire_lock()
    run.start("{}")
    with pytest.raises(RunDirError, match="in use by a running training"):
        ws.start_train(raw, "busy")
    run.complete()
    run.release_lock()
    with pytest.raises(RunDirError, match="already exists"):
        ws.start_train(raw, "busy")
    with pytest.raises(ConfigError, match="train.batch_size"):
        ws.start_train({**raw, "train": {"batch_size": 0}}, "new")
    assert not (ws.runs_dir / "new").exists()

    # Stop: a "training" that starts a child of its own; both end, and the run reads `stopped`
    fake = ws.runs_dir / "fake"
    fake.mkdir()
    script = (
        "import os, subprocess, sys, time\n"
        "from tuneforge.training.rundir import RunDir\n"
        f"r = RunDir({str(fake)!r}); r.acquire_lock(); r.start('{{}}')\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(tmp_path / 'child.pid')!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )
    job = ws.launch("train", [sys.executable, "-c", script], fake / "train.log", fake)
    deadline = time.time() + 60
    while time.time() < deadline and not ((tmp_path / "child.pid").is_file() and RunDir(fake).state() == "running"):
        time.sleep(0.2)
    child = int((tmp_path / "child.pid").read_text())
    with pytest.raises(RunDirError, match="in use"):
        ws.start_train(raw, "fake")
    state = ws.stop(fake, grace=5)
    assert state == "stopped"
    # the job's own record: Popen.poll() says None while the job's reaping thread waits on the process
    assert job.wait(timeout=30) is not None
    assert not pid_alive(child)  # (a zombie waiting for init counts as gone)


def test_reports_lose_their_image_lines():
    md = "# Report\n\n![confusion matrix](confusion_matrix.png)\n\n| a | b |\n"
    assert "png" not in without_images(md) and "| a | b |" in without_images(md)


def test_log_tail_keeps_the_last_state_of_progress_bars(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("start\n 10%|#\r 50%|###\r100%|#####\ndone\n")
    from tuneforge.training.runlist import log_tail

    assert log_tail(log).splitlines() == ["start", "100%|#####", "done"]


def test_curves_split_losses_from_metrics(tmp_path):
    from tuneforge.webui.runs_page import curves

    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 0.7, "learning_rate": 0.001, "epoch": 0.1}\n'
        '{"step": 2, "eval_loss": 0.6, "eval_accuracy": 0.8, "eval_runtime": 1.0}\n{"step": 3, "lo'
    )
    loss, other = curves(Workspace(tmp_path / "runs", cwd=tmp_path), tmp_path)
    assert sorted(loss["series"]) == ["eval_loss", "loss"] and list(other["series"]) == ["eval_accuracy"]
    # a classifier logs nine metrics: the main one first, per-class averages left out, at most four curves
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 5, "eval_accuracy": 0.8, "eval_precision_macro": 0.7, "eval_recall_macro": 0.7, "eval_f1_macro": 0.7,'
        ' "eval_f1_weighted": 0.7, "eval_auc_roc": 0.9, "eval_a": 1, "eval_b": 2, "eval_c": 3}\n'
    )
    _, other = curves(Workspace(tmp_path / "runs", cwd=tmp_path), tmp_path, "auc_roc")
    assert list(dict.fromkeys(other["series"])) == ["eval_auc_roc", "eval_accuracy", "eval_f1_macro", "eval_a"]


def test_a_series_of_one_point_is_drawn_as_points(tmp_path):
    """A line needs two points: a metric evaluated once drew an empty chart. The plot receives a point mark while
    no series has two points, and lines once one has."""
    from tuneforge.webui.runs_page import curves, drawn

    ws = Workspace(tmp_path / "runs", cwd=tmp_path)
    plot = gr.LinePlot(x="step", y="value", color="series")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "eval_accuracy": 0.8, "eval_f1_macro": 0.7}\n')
    loss, other = curves(ws, tmp_path)
    sent = drawn(plot, other)
    assert sent["mark"] == "point" and [dict(zip(sent["columns"], row)) for row in sent["data"]] == [
        {"step": 2, "value": 0.8, "series": "eval_accuracy"},
        {"step": 2, "value": 0.7, "series": "eval_f1_macro"},
    ]
    assert plot.postprocess(sent) == sent  # gradio hands it to the browser as it is
    assert drawn(plot, loss)["mark"] == "point"  # the first logged loss
    metrics.write_text(metrics.read_text() + '{"step": 3, "loss": 0.6}\n{"step": 4, "eval_accuracy": 0.9}\n')
    loss, other = curves(ws, tmp_path)
    assert drawn(plot, loss)["mark"] == "line" and drawn(plot, other)["mark"] == "line"
    assert drawn(plot, other.iloc[:0])["mark"] == "line"  # nothing to draw yet


def test_search_refuses_an_empty_space(tmp_path):
    from tuneforge.webui.tools_page import start_search

    ws = Workspace(tmp_path / "runs", cwd=tmp_path)
    with pytest.raises(ValueError, match="search space"):
        start_search(ws, {"task": {"type": "classification"}, "method": {"name": "lora"}}, "", 2, "s")
    with pytest.raises(ValueError, match="malformed"):
        start_search(ws, {"task": {"type": "classification"}, "method": {"name": "lora"}}, "a: [", 2, "s")


def test_signal_group_leaves_a_foreign_group_alone(tmp_path):
    """A run started from a shell leads no process group of ours: Stop signals that process only."""
    from tuneforge.webui.jobs import _signal_group

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # in this test's group
    try:
        assert os.getpgid(p.pid) != p.pid
        _signal_group(p.pid, signal.SIGTERM)
        assert p.wait(timeout=10) == -signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()


def test_every_config_field_has_chinese_help():
    """A new config field without a Chinese help text fails here (add its path to webui/schema_zh.py), and so does
    an entry whose field is gone or renamed."""
    from tuneforge.webui.schema_zh import HELP_ZH, ZH_BY_PATH, help_text, paths_of

    paths = [s.path for s in fields.all_fields()]
    assert len(paths) == len(set(paths)), "two fields with one path"
    missing = sorted(set(paths) - set(ZH_BY_PATH))
    assert not missing, missing
    stale = sorted(set(ZH_BY_PATH) - set(paths))
    assert not stale, stale
    named = [p for entry in HELP_ZH for p in paths_of(entry)]
    assert len(named) == len(set(named)), "a path in two entries"
    assert paths_of("method[lora, qlora].r") == ["method[lora].r", "method[qlora].r"]
    spec = next(s for s in fields.all_fields() if s.key == "train.learning_rate")
    assert help_text(spec, "en") == spec.description and "学习率" in help_text(spec, "zh")
    r = next(s for s in fields.all_fields() if s.group == "method:qlora" and s.key == "method.r")
    assert r.path == "method[qlora].r" and help_text(r, "zh") == "低秩更新的秩。"


def test_rewording_a_description_keeps_its_chinese_help(monkeypatch):
    """The translation follows the field, not its English text: a reworded description still shows in Chinese."""
    from tuneforge.config.schema import RunConfig
    from tuneforge.webui.schema_zh import help_text

    before = next(s for s in fields.all_fields() if s.key == "train.learning_rate")
    info = RunConfig.model_fields["train"].annotation.model_fields["learning_rate"]
    monkeypatch.setattr(info, "description", "The highest learning rate of the schedule.")
    after = next(s for s in fields.all_fields() if s.key == "train.learning_rate")
    assert after.description == "The highest learning rate of the schedule." != before.description
    assert help_text(after, "en") == after.description
    assert help_text(after, "zh") == help_text(before, "zh") and "学习率" in help_text(after, "zh")


def test_a_taken_port_is_one_line_and_exit_6(tmp_path, capsys, monkeypatch):
    import socket

    from tuneforge.cli.app import main

    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["webui", "--port", str(port), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 6 and err[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}"), err


def test_a_study_started_from_a_shell_can_be_followed_by_its_path(tmp_path):
    from tuneforge.webui.tools_page import study_view

    study = tmp_path / "studies" / "cli-study"
    study.mkdir(parents=True)
    (study / "trials.csv").write_text("trial,state,accuracy\n0,COMPLETE,0.8\n1,PRUNED,0.6\n")
    ws = Workspace(tmp_path / "runs", [tmp_path], cwd=tmp_path)
    table, plots, _ = study_view(ws, "studies/cli-study", "en")
    assert list(table["state"]) == ["COMPLETE", "PRUNED"] and plots == []
    with pytest.raises(PathError):
        study_view(ws, "../elsewhere/study", "en")


def test_a_failed_command_raises_its_own_error_line(tmp_path):
    from tuneforge.errors import CommandError

    ws = Workspace(tmp_path / "runs", cwd=tmp_path)
    code = "import sys; print('working'); print('error: data file not found: x.csv', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CommandError, match=r"^data file not found: x\.csv$"):
        ws.run_command("data", [sys.executable, "-c", code], tmp_path / "cmd.log")
    assert "working" in ws.run_command("ok", [sys.executable, "-c", "print('working')"], tmp_path / "ok.log")


def test_launch_waits_for_a_slow_first_page(tmp_path, monkeypatch):
    """Gradio's own check of `/` gives up after one 3-second timeout ("When localhost is not accessible..."); a
    busy machine answered too late in CI. launch() replaces the check by a patient one while it starts, and puts
    Gradio's back afterwards."""
    import socket

    from gradio import networking

    from tuneforge.webui.app import launch

    calls = []

    def slow_at_first(url):  # the page not answering in time, twice, then answering
        calls.append(url)
        return len(calls) > 2

    monkeypatch.setattr(networking, "url_ok", slow_at_first)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(port=port, runs_dir=str(tmp_path / "runs"), block=False)
    try:
        assert calls == []  # the patient check asked the page itself
    finally:
        demo.close()
    assert networking.url_ok is slow_at_first  # put back after launch


def test_a_slow_first_page_does_not_stop_the_launch():
    """Gradio's launch() gives its own page 3 s to answer; a busy machine takes longer for this app's page. Inside
    patient_localhost_check its check waits for a page that answers in 4 s."""
    import http.server
    import threading

    from gradio import networking

    from tuneforge.webui.app import patient_localhost_check

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            time.sleep(4)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        assert networking.url_ok(url) is False  # Gradio's own check gives up
        with patient_localhost_check(seconds=20):
            assert networking.url_ok(url) is True
    finally:
        server.shutdown()
