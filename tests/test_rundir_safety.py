"""Run-directory safety: overwrite never destroys a run (or a directory that is not one) before the new run is
complete; checkpoints are complete-or-invisible; one live process per run; `tuneforge runs`; no duplicate
metrics rows after a resume. Includes a real SIGKILL of a training subprocess."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_config

FAST = dict(train__max_steps=4, train__eval_strategy="no", train__save_steps=2, train__save_total_limit=3)


def _cfg(tiny_bert, data, out, **extra):
    from tuneforge.config import validate_config

    return validate_config(tiny_config(tiny_bert, data, str(out), method="full", **{**FAST, **extra}))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _cli(*args: str, capsys) -> tuple[int, str, str]:
    from tuneforge.cli.app import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ---------- 1. overwrite ----------


@pytest.mark.unit
def test_overwrite_refuses_a_directory_that_is_not_a_run(tiny_bert, sentiment_csv, tmp_path):
    import tuneforge
    from tuneforge.errors import RunDirError

    mine = tmp_path / "thesis"
    (mine / "model").mkdir(parents=True)
    (mine / "eval").mkdir()
    (mine / "model/my_weights.bin").write_bytes(b"precious")
    (mine / "eval/thesis_results.csv").write_text("a,b\n1,2\n")
    before = sorted(str(p.relative_to(mine)) for p in mine.rglob("*"))
    for overwrite, resume in ((True, False), (False, False), (False, True)):
        cfg = _cfg(tiny_bert, sentiment_csv, mine, output__overwrite=overwrite)
        with pytest.raises(RunDirError, match="not a tuneforge run") as exc:
            tuneforge.train(cfg, resume=resume)
        assert "\n" not in str(exc.value)
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == before  # nothing written, nothing gone
    assert (mine / "model/my_weights.bin").read_bytes() == b"precious"


@pytest.mark.integration
def test_failed_overwrite_keeps_the_old_run_and_a_completed_one_replaces_it(
    tiny_bert, sentiment_csv, tmp_path, monkeypatch
):
    import tuneforge
    from tuneforge.errors import DataError
    from tuneforge.training.rundir import RunDir

    out = tmp_path / "r"
    first = tuneforge.train(_cfg(tiny_bert, sentiment_csv, out))
    assert first.run_dir == out
    old_weights = (out / "model/model.safetensors").read_bytes()
    old_status = json.loads((out / "status.json").read_text())
    (out / "notes.txt").write_text("mine")  # not a run output: must survive a successful overwrite

    with pytest.raises(DataError):
        tuneforge.train(_cfg(tiny_bert, str(tmp_path / "missing.csv"), out, output__overwrite=True))
    # the old run is intact and still the completed one; the attempt is kept beside it, marked failed
    assert json.loads((out / "status.json").read_text()) == old_status
    assert (out / "model/model.safetensors").read_bytes() == old_weights
    assert not (out / "run.lock").exists()
    attempt = RunDir.attempt_holder(out) / "r"
    assert RunDir(attempt).status()["state"] == "failed" and RunDir(attempt).state() == "failed"
    assert not (attempt / "model").exists()

    # an overwrite stopped after its first checkpoint: the old run stays; --resume continues the attempt
    from tuneforge.training import callbacks

    def crash(self, args, state, control, **kw):
        if state.global_step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.MetricsLogCallback, "on_step_end", crash, raising=False)
    cfg = _cfg(tiny_bert, sentiment_csv, out, output__overwrite=True, train__seed=8, train__logging_steps=1)
    with pytest.raises(KeyboardInterrupt):
        tuneforge.train(cfg)
    monkeypatch.undo()
    assert json.loads((out / "status.json").read_text()) == old_status
    assert RunDir(attempt).state() == "stopped" and RunDir(attempt).last_checkpoint().endswith("checkpoint-2")
    assert "replaces" in RunDir(attempt).status()

    res = tuneforge.train(cfg, resume=True)
    assert res.run_dir == out and res.efficiency["global_steps"] == 4
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "completed" and status["started_at"] >= old_status["started_at"]
    assert "replaces" not in status and status["pid"] == os.getpid()
    assert (out / "model/model.safetensors").read_bytes() != old_weights  # seed 8: other weights
    assert (out / "notes.txt").read_text() == "mine"
    assert not RunDir.attempt_holder(out).exists() and not (out / "run.lock").exists()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # the new run's rows only, once each


# ---------- 2. checkpoints ----------


def _checkpoint(root: Path, step: int, marker=True, state=True, weights=True) -> Path:
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if weights:
        (d / "model.safetensors").write_bytes(b"x")
    if state:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if marker:
        (d / "tuneforge-complete.json").write_text(json.dumps({"step": step}))
    return d


@pytest.mark.unit
def test_last_checkpoint_ignores_half_written_ones(tmp_path):
    from transformers.trainer_utils import get_last_checkpoint

    from tuneforge.training.rundir import RunDir

    run = RunDir(tmp_path)
    _checkpoint(run.checkpoints, 4, marker=False)  # from before the marker existed: complete by its files
    assert run.last_checkpoint().endswith("checkpoint-4")
    _checkpoint(run.checkpoints, 6)
    _checkpoint(run.checkpoints, 12, marker=False, state=False)  # killed while the Trainer wrote it
    _checkpoint(run.checkpoints, 14, marker=False)  # trainer_state.json cut in the middle
    (run.checkpoints / "checkpoint-14/trainer_state.json").write_text('{"global_st')
    assert get_last_checkpoint(str(run.checkpoints)).endswith("checkpoint-14")  # what transformers would pick
    assert run.last_checkpoint().endswith("checkpoint-6")
    assert run.drop_incomplete_checkpoints() == ["checkpoint-12", "checkpoint-14"]
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["checkpoint-4", "checkpoint-6"]


@pytest.mark.unit
def test_metrics_rows_after_the_checkpoint_are_dropped(tmp_path):
    from tuneforge.training.callbacks import drop_rows_after

    log = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0, "train_runtime": 0.1} for s in (1, 2, 4, 6, 8)]
    rows.append({"step": 6, "train_loss": 1.0, "train_runtime": 1.0})  # the end-of-training summary
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9, "lo')  # last line cut by the kill
    assert drop_rows_after(log, 6) == 3
    assert [json.loads(l)["step"] for l in log.read_text().splitlines()] == [1, 2, 4, 6]


# ---------- 3. lock and states ----------


@pytest.mark.unit
def test_lock_of_a_live_process_refuses_and_a_dead_one_is_stale(tmp_path):
    from tuneforge.errors import RunDirError
    from tuneforge.training.rundir import RunDir

    a, b = RunDir(tmp_path), RunDir(tmp_path)
    a.acquire_lock()
    info = json.loads(a.lock_file.read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["started_at"]
    with pytest.raises(RunDirError, match=f"in use by PID {os.getpid()}"):
        b.acquire_lock()
    b.release_lock()  # not b's: left alone
    assert a.lock_file.exists()
    a.release_lock()
    assert not a.lock_file.exists()

    a.lock_file.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started_at": "x"}))
    b.acquire_lock()  # stale: taken over
    assert json.loads(b.lock_file.read_text())["pid"] == os.getpid()
    b.release_lock()
    a.lock_file.write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere", "started_at": "x"}))
    with pytest.raises(RunDirError, match="on elsewhere"):  # another host's PID cannot be checked from here
        b.acquire_lock()
    a.lock_file.write_text("")  # a kill between creating the lock and writing it: stale once not brand new
    os.utime(a.lock_file, (time.time() - 10, time.time() - 10))
    b.acquire_lock()
    assert json.loads(b.lock_file.read_text())["pid"] == os.getpid()
    b.release_lock()
    # a live PID that is not the process that took the lock (the PID was reused after a kill) is stale too
    a.lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "pid_start": "1"}))
    b.acquire_lock()
    b.release_lock()


@pytest.mark.unit
def test_a_completed_overwrite_cut_before_its_swap_is_swapped_in(tmp_path):
    from types import SimpleNamespace

    from tuneforge.errors import RunDirError
    from tuneforge.training.jsonfile import write_json
    from tuneforge.training.rundir import RunDir

    target = tmp_path / "r"
    (target / "model").mkdir(parents=True)
    (target / "model/old.bin").write_text("old")
    write_json(target / "status.json", {"state": "completed", "metrics": {"accuracy": 0.1}})
    new = RunDir.attempt_holder(target) / "r"
    (new / "model").mkdir(parents=True)
    (new / "model/new.bin").write_text("new")
    write_json(new / "status.json", {"state": "completed", "metrics": {"accuracy": 0.9}, "replaces": str(target)})
    cfg = SimpleNamespace(output=SimpleNamespace(dir=str(target), name=None, overwrite=False))
    with pytest.raises(RunDirError, match="already exists"):
        RunDir.for_config(cfg)
    assert sorted(p.name for p in (target / "model").iterdir()) == ["new.bin"]
    assert RunDir(target).status()["metrics"] == {"accuracy": 0.9} and "replaces" not in RunDir(target).status()
    assert not RunDir.attempt_holder(target).exists() and not (target / "run.lock").exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    "status, lock, expected",
    [
        ({"state": "running", "pid": "ALIVE"}, None, "running"),
        ({"state": "running", "pid": "DEAD"}, None, "interrupted"),
        ({"state": "running", "pid": "ALIVE"}, {"pid": "DEAD"}, "interrupted"),
        ({"state": "completed"}, None, "completed"),
        ({"state": "failed", "error": "DataError: x"}, None, "failed"),
        ({"state": "failed", "error": "interrupted"}, None, "stopped"),
        ({"state": "bogus"}, None, None),
    ],
)
def test_state_reads_a_dead_running_run_as_interrupted(tmp_path, status, lock, expected):
    from tuneforge.training.jsonfile import write_json
    from tuneforge.training.rundir import RunDir

    pids = {"ALIVE": os.getpid(), "DEAD": _dead_pid()}
    fix = lambda d: {k: pids.get(v, v) for k, v in d.items()} | {"host": socket.gethostname()}  # noqa: E731
    run = RunDir(tmp_path)
    write_json(run.status_file, fix(status))
    if lock:
        write_json(run.lock_file, fix(lock))
    assert run.state() == expected


# ---------- 4. tuneforge runs ----------


@pytest.mark.unit
def test_runs_lists_states_metrics_and_json(tmp_path, capsys):
    from tuneforge.training.jsonfile import write_json

    root = tmp_path / "runs"
    specs = {
        "done": {"state": "completed", "metrics": {"accuracy": 0.9, "f1_macro": 0.8}},
        "dead": {"state": "running", "pid": _dead_pid(), "host": socket.gethostname()},
        "live": {"state": "running", "pid": os.getpid(), "host": socket.gethostname()},
        "bad": {"state": "failed", "error": "DataError: no such file"},
        "cmp/full-seed1": {"state": "failed", "error": "interrupted"},
    }
    for name, st in specs.items():
        (root / name).mkdir(parents=True)
        write_json(root / name / "status.json", {**st, "updated_at": "2020-01-01T00:00:00"})
    (root / "done/config.yaml").write_text("eval: {metric: f1_macro}\n")
    (root / "not-a-run").mkdir()

    code, out, _ = _cli("runs", str(root), "--json", capsys=capsys)
    assert code == 0
    rows = {Path(r["path"]).relative_to(root).as_posix(): r for r in json.loads(out)}
    assert {k: r["state"] for k, r in rows.items()} == {
        "done": "completed",
        "dead": "interrupted",
        "live": "running",
        "bad": "failed",
        "cmp/full-seed1": "stopped",
    }
    assert (rows["done"]["metric"], rows["done"]["value"]) == ("f1_macro", 0.8)  # the config's eval.metric
    assert rows["done"]["age_seconds"] > 86400 * 365

    code, out, _ = _cli("runs", str(root), capsys=capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 5
    done = next(l for l in lines if l.rstrip().endswith("done"))
    assert done.split()[:2] == ["completed", "f1_macro=0.8000"] and done.split()[2].endswith("d")
    assert any(l.startswith("interrupted") and l.rstrip().endswith("dead") for l in lines)
    code, _, err = _cli("runs", str(tmp_path / "nope"), capsys=capsys)
    assert code == 5 and err.count("\n") == 1


# ---------- 2 + 3 + 5 end to end: SIGKILL a real training process, then resume ----------


@pytest.mark.integration
def test_sigkill_then_resume_skips_half_checkpoint_and_duplicate_rows(
    tiny_bert, sentiment_csv, tmp_path, write_yaml, capsys
):
    import yaml

    import tuneforge
    import tuneforge.training.engine
    from tuneforge.errors import RunDirError
    from tuneforge.training.rundir import RunDir

    out = tmp_path / "run"
    raw = tiny_config(
        tiny_bert,
        sentiment_csv,
        str(out),
        method="full",
        train__max_steps=100000,
        train__eval_strategy="no",
        train__save_steps=3,
        train__save_total_limit=2,
        train__logging_steps=1,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "train", write_yaml(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    run = RunDir(out)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if any(
                int(p.name.split("-")[1]) >= 6 and (p / "tuneforge-complete.json").exists()
                for p in run.checkpoint_dirs()
            ):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert run.state() == "running"
        # a second process on the same run directory is refused while the first is alive
        with pytest.raises(RunDirError, match=f"in use by PID {proc.pid}"):
            tuneforge.train(_cfg(tiny_bert, sentiment_csv, out), resume=True)
        code, listing, _ = _cli("runs", str(tmp_path), capsys=capsys)
        assert listing.startswith("running") and f"pid {proc.pid}" in listing
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()

    assert run.status()["state"] == "running" and run.state() == "interrupted"
    assert json.loads((out / "run.lock").read_text())["pid"] == proc.pid  # left behind by the kill: stale
    _, listing, _ = _cli("runs", str(tmp_path), capsys=capsys)
    assert listing.startswith("interrupted")
    good = run.last_checkpoint()
    step = int(good.rsplit("-", 1)[1])
    # the kill landed in the middle of the next save (simulated): a directory without trainer_state.json
    half = run.checkpoints / f"checkpoint-{step + 3}"
    half.mkdir(exist_ok=True)
    (half / "model.safetensors").write_bytes(b"\0" * 10)
    (half / "tuneforge-complete.json").unlink(missing_ok=True)
    (half / "trainer_state.json").unlink(missing_ok=True)
    rows_before = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.endswith("}")]
    assert max(r["step"] for r in rows_before) >= step  # rows the killed process wrote

    stop = step + 4
    cfg = yaml.safe_load(open(write_yaml(raw)))
    cfg["train"]["max_steps"] = stop
    from tuneforge.config import validate_config

    os.environ["TUNEFORGE_KEEP_CHECKPOINTS"] = "1"
    try:
        res = tuneforge.train(validate_config(cfg), resume=True)
    finally:
        del os.environ["TUNEFORGE_KEEP_CHECKPOINTS"]
    err = capsys.readouterr().err
    assert f"removed incomplete checkpoint(s) checkpoint-{step + 3}" in err
    assert f"resuming from checkpoint-{step}" in err
    assert res.efficiency["global_steps"] == stop and run.state() == "completed"
    assert not (out / "run.lock").exists()
    assert all((p / "tuneforge-complete.json").is_file() for p in run.checkpoint_dirs())
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if "loss" in json.loads(l)]
    assert steps == sorted(set(steps)) and steps[-1] == stop and set(range(1, stop + 1)) <= set(steps)
