"""Preference runs as real processes: one killed with SIGKILL mid-training and resumed gives the uninterrupted run's
per-step losses and final metrics exactly (the reference, adapters off, and the loss keep no state outside the
checkpoint); two processes (`--nproc 2`, gloo DDP on CPU) train one run with the adapters-off reference."""

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


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_kill_9_then_resume_gives_the_uninterrupted_result(tiny_llama, tmp_path, loss):
    raw = pref_config(tiny_llama, write_jsonl(tmp_path / "pairs.jsonl", pair_rows(40)), "unused", loss=loss)
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
    assert not (run / "eval" / "metrics.json").exists()
    resumed = subprocess.run([*cmd, f"output.dir={run}", "--resume"], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-" in resumed.stderr

    assert _losses(run) == _losses(ref)
    want = json.loads((ref / "eval" / "metrics.json").read_text())["test"]
    got = json.loads((run / "eval" / "metrics.json").read_text())["test"]
    assert got == want


def test_two_processes_train_one_preference_run(tiny_llama, tmp_path):
    raw = pref_config(tiny_llama, write_jsonl(tmp_path / "pairs.jsonl", pair_rows(40)), str(tmp_path / "run"))
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
