"""Progress lines when output is not a terminal, and the run's console log (issue 33, "Progress where people look")."""

import logging
import sys
from types import SimpleNamespace

import pytest

from tuneforge.training.console import ConsoleLog, already_captured
from tuneforge.training.progress import ProgressLines, duration, progress_line


@pytest.mark.unit
def test_progress_line_says_step_loss_speed_and_time_left():
    line = progress_line(40, 120, 0.53124, 0.5, 95)
    assert line == "tuneforge: step 40/120 (33%)  loss 0.5312  0.50 steps/s  elapsed 1m35s  ETA 2m40s"
    assert progress_line(3, 0, None, None, 5) == "tuneforge: step 3  elapsed 5s"
    assert duration(3725) == "1h02m" and duration(59.6) == "1m00s"


@pytest.mark.unit
def test_progress_lines_first_step_then_every_interval_and_at_the_end(monkeypatch):
    clock = iter([0.0, 1.0, 10.0, 31.0, 35.0, 70.0])
    monkeypatch.setattr("tuneforge.training.progress.time.perf_counter", lambda: next(clock))
    lines: list[str] = []
    cb = ProgressLines(lines.append, interval=30, eval_seconds=lambda: 0.0)
    state = SimpleNamespace(global_step=10, max_steps=100, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)  # t=0, a run resumed at step 10
    for step, logs in ((11, {"loss": 2.0}), (12, None), (13, {"loss": 1.5}), (14, None)):  # t=1, 10, 31, 35
        state.global_step = step
        cb.on_log(None, state, None, logs=logs)
        cb.on_step_end(None, state, None)
    cb.on_train_end(None, state, None)  # t=70
    assert [line.split("  ")[0] for line in lines] == [
        "tuneforge: step 11/100 (11%)",
        "tuneforge: step 13/100 (13%)",
        "tuneforge: step 14/100 (14%)",
    ]
    assert "loss 2.0000" in lines[0] and "loss 1.5000" in lines[1]
    assert "0.10 steps/s" in lines[1]  # 3 steps of this process in 31 s, not 13 steps


@pytest.mark.unit
def test_the_last_step_is_printed_once_with_its_own_loss(monkeypatch):
    clock = iter([0.0, 1.0, 40.0, 41.0])
    monkeypatch.setattr("tuneforge.training.progress.time.perf_counter", lambda: next(clock))
    lines: list[str] = []
    cb = ProgressLines(lines.append, interval=30, eval_seconds=lambda: 0.0)
    state = SimpleNamespace(global_step=0, max_steps=2, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    state.global_step = 1
    cb.on_log(None, state, None, logs={"loss": 2.0})
    cb.on_step_end(None, state, None)  # t=1: the first step prints
    state.global_step = 2
    cb.on_step_end(None, state, None)  # t=40: the last step waits for its loss
    cb.on_log(None, state, None, logs={"loss": 1.25})
    cb.on_train_end(None, state, None)  # t=41
    assert [line.split("  ")[0] for line in lines] == ["tuneforge: step 1/2 (50%)", "tuneforge: step 2/2 (100%)"]
    assert "loss 1.2500" in lines[1]


@pytest.mark.unit
def test_console_log_keeps_lines_and_the_last_state_of_progress_bars(tmp_path, capsys):
    path = tmp_path / "console.log"
    logger = logging.getLogger("tuneforge-test-console")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        with ConsoleLog(path) as log:
            print("tuneforge: run directory runs/x", file=sys.stderr)
            sys.stderr.write("  0%|   | 0/3\r 33%|#  | 1/3\r100%|###| 3/3\n")
            print("to stdout")
            logger.warning("a logged warning")
            log.write_line("tuneforge: step 3/3 (100%)")
            sys.stderr.write("unfinished")
            assert sys.stderr.isatty() == sys.__stderr__.isatty()
    finally:
        logger.removeHandler(handler)
    assert path.read_text().splitlines() == [
        "tuneforge: run directory runs/x",
        "100%|###| 3/3",
        "to stdout",
        "a logged warning",
        "tuneforge: step 3/3 (100%)",
        "unfinished",
    ]
    err = capsys.readouterr().err
    assert "1/3" in err and "step 3/3" not in err  # the console keeps its bar; file-only lines stay out of it


@pytest.mark.unit
def test_a_run_already_logged_by_its_caller_is_not_copied(tmp_path):
    assert not already_captured(tmp_path)


@pytest.mark.integration
def test_a_run_writing_to_a_file_prints_progress_lines_and_keeps_its_console_log(
    tiny_bert, sentiment_csv, tmp_path, monkeypatch, capsys
):
    """Output that is not a terminal gets progress lines (here: every step); the run keeps what it printed in
    RUN/console.log, which the web UI shows for a run started from a shell."""
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    from conftest import tiny_config

    monkeypatch.setenv("TUNEFORGE_PROGRESS_SECONDS", "0")
    raw = tiny_config(tiny_bert, sentiment_csv, str(tmp_path / "run"), method="full", train__epochs=1)
    result = train(load_config(raw=raw))
    err = capsys.readouterr().err
    steps = result.efficiency["global_steps"]
    progress = [line for line in err.splitlines() if line.startswith("tuneforge: step ")]
    assert len(progress) == steps  # every step; the last one once, at the end, with its loss
    assert progress[-1].startswith(f"tuneforge: step {steps}/{steps} (100%)  loss ")
    log = (result.run_dir / "console.log").read_text()
    assert f"tuneforge: run directory {result.run_dir}" in log and progress[-1] in log and "tuneforge: done in" in log


@pytest.mark.unit
def test_a_process_whose_stderr_is_the_runs_train_log_is_seen_as_captured(tmp_path):
    import subprocess

    code = "import sys; from pathlib import Path; from tuneforge.training.console import already_captured as a; "
    code += "print(a(Path(sys.argv[1])), a(Path(sys.argv[2])))"
    other = tmp_path / "other"
    other.mkdir()
    with open(tmp_path / "train.log", "w") as log:
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), str(other)], stderr=log, stdout=subprocess.PIPE, text=True
        ).stdout
    assert out.split() == ["True", "False"]


@pytest.mark.unit
def test_output_redirected_into_the_runs_train_log_in_this_process_is_seen_as_captured(tmp_path):
    """A search trial redirects sys.stderr into the trial's train.log: no second copy of it."""
    import contextlib

    with open(tmp_path / "train.log", "a") as log, contextlib.redirect_stderr(log):
        assert already_captured(tmp_path)
    assert not already_captured(tmp_path)


@pytest.mark.unit
def test_a_child_process_reports_its_own_peak_memory_not_its_parents():
    """efficiency.json's peak RSS of a run started by a larger process (compare's runs, the web UI's) is the run's
    own: ru_maxrss would report the parent's high-water mark (kept across exec), VmHWM does not."""
    import subprocess

    import numpy as np

    ballast = np.ones(2 * 2**30 // 8)  # the parent holds 2 GiB
    code = (
        "import resource; from tuneforge.evaluation.speed import peak_rss_bytes; "
        "print(peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    )
    own, inherited = map(
        int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    )
    assert ballast.nbytes == 2 * 2**30 and own < 1.5 * 2**30, (own, inherited)
