"""Preference runs as real processes: one killed with SIGKILL mid-training and resumed gives the uninterrupted run's
per-step losses and final metrics exactly (the reference, adapters off, and the loss keep no state outside the
checkpoint; a precomputed reference is computed once and read back); two processes (`--nproc 2`, gloo DDP on CPU)
train one run with the adapters-off or the precomputed reference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from preference_common import pair_rows, pref_config
from sft_common import write_jsonl

from conftest import REPO

pytestmark = pytest.mark.integration


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def _losses(run) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _checkpoints(run) -> list:
    d = run / "checkpoints"
    return (
        sorted(c.name for c in d.glob("checkpoint-*") if (c / "tuneforge-complete.json").is_file())
        if d.is_dir()
        else []
    )


@pytest.mark.parametrize("loss, method", [("dpo", "lora"), ("kto", "lora"), ("dpo", "full")])
def test_kill_9_then_resume_gives_the_uninterrupted_result(tiny_llama, tmp_path, loss, method):
    """dpo x full precomputes its reference log-probs (task.reference: auto): once, read back on --resume."""
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(40))
    raw = pref_config(tiny_llama, data, "unused", loss=loss, method=method)
    raw["train"].update(epochs=2, eval_strategy="steps", eval_steps=3, save_steps=3, logging_steps=1)
    raw["task"]["report_prompts"] = 0
    raw.pop("output")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "tuneforge", "train", str(cfg)]

    ref = tmp_path / "ref"
    done = subprocess.run([*cmd, f"output.dir={ref}"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, f"output.dir={run}"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while proc.poll() is None and not _checkpoints(run) and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first checkpoint: nothing to resume"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_err = proc.stderr.read().decode()
    assert not (run / "eval" / "metrics.json").exists()
    resumed = subprocess.run([*cmd, f"output.dir={run}", "--resume"], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-" in resumed.stderr
    precomputed = method == "full"
    assert ("reference log-probs: computing for 40 pairs" in killed_err) == precomputed
    assert "reference log-probs: computing" not in resumed.stderr
    assert ("reference log-probs: read from" in resumed.stderr) == precomputed

    assert _losses(run) == _losses(ref)
    want = json.loads((ref / "eval" / "metrics.json").read_text())["test"]
    got = json.loads((run / "eval" / "metrics.json").read_text())["test"]
    assert got == want


@pytest.mark.parametrize("reference", ["adapters", "precompute"])
def test_two_processes_train_one_preference_run(tiny_llama, tmp_path, reference):
    """precompute: the first process computes the reference log-probs, then the second reads them."""
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(40))
    raw = pref_config(tiny_llama, data, str(tmp_path / "run"), reference=reference)
    raw["train"].update(epochs=1, batch_size=2)
    raw["task"]["report_prompts"] = 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", str(cfg), "--nproc", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    test = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["test"]
    assert test["pairs"] == 8 and 0.0 <= test["reward_accuracy"] <= 1.0
    eff = json.loads((tmp_path / "run" / "efficiency.json").read_text())
    assert eff["global_steps"] == 6  # 24 pairs, 2 per process and step, 2 processes
    if reference == "precompute":
        assert done.stderr.count("reference log-probs: computing for 40 pairs") == 1  # rank 0's (the rest is quiet)
        assert (tmp_path / "run" / "reference" / "key.json").is_file()
