"""Kill -9 at random moments, then --resume, until the run completes: the final metrics and the per-step losses
equal the uninterrupted run's exactly (CPU, fp32). Real processes, real SIGKILLs: kills land in data
preparation, training steps, evaluations, checkpoint writes and the final save, across all three epochs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, make_sentiment_rows, tiny_config

pytestmark = pytest.mark.integration
KILLS = 10


def _cmd(cfg_path, *extra):
    return [sys.executable, "-m", "tuneforge", "train", str(cfg_path), *extra]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def _metrics(run_dir) -> dict:
    return json.loads((run_dir / "eval" / "metrics.json").read_text())["test"]


def _losses(run_dir) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), "metrics.jsonl repeats a step after a resume"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _dirs(run) -> list:
    """The run directory and, while an overwrite of it trains, that attempt's directory."""
    return [run, run.parent / f".{run.name}.overwrite" / run.name]


def _has_checkpoint(run) -> bool:
    from tuneforge.training.rundir import RunDir

    return any(d.is_dir() and RunDir(d).last_checkpoint() is not None for d in _dirs(run))


def _training_started(run) -> bool:
    return any((d / "metrics.jsonl").is_file() for d in _dirs(run))


def _step(run) -> int:
    """The newest step logged in metrics.jsonl (0 before training)."""
    step = 0
    for d in _dirs(run):
        try:
            lines = (d / "metrics.jsonl").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                step = max(step, int(json.loads(line).get("step", 0)))
            except (ValueError, AttributeError):
                pass  # a line being written
    return step


def _where(run) -> tuple:
    """(newest complete checkpoint step, half-written checkpoint names, partial final model) after a kill."""
    from tuneforge.training.rundir import RunDir

    step, partial, model = 0, [], False
    for d in _dirs(run):
        if not d.is_dir():
            continue
        last = RunDir(d).last_checkpoint()
        step = max(step, int(Path(last).name.split("-")[1]) if last else 0)
        ckpts = (d / "checkpoints").glob("checkpoint-*") if (d / "checkpoints").is_dir() else []
        partial += [c.name for c in ckpts if not (c / "tuneforge-complete.json").is_file()]
        model = model or (d / "model.partial").exists()
    return step, partial, model


def test_kill_9_anywhere_then_resume_gives_the_uninterrupted_result(tmp_path, tiny_bert):
    import pandas as pd

    rows = make_sentiment_rows(240)
    for i, r in enumerate(rows):
        r["text"] += " fine" * (i % 5)
    pd.DataFrame(rows).to_csv(tmp_path / "data.csv", index=False)
    # a checkpoint (and an evaluation) every 2 of 36 steps: a good share of random kills land inside a save
    raw = tiny_config(
        tiny_bert,
        str(tmp_path / "data.csv"),
        "unused",
        method="lora",
        train__epochs=3,
        train__batch_size=16,
        train__eval_strategy="steps",
        train__eval_steps=2,
        train__save_steps=2,
        train__logging_steps=1,
    )
    raw.pop("output")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))

    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    done = subprocess.run(_cmd(cfg, f"output.dir={ref}"), env=_env(), capture_output=True, text=True, timeout=300)
    startup = 0.5 * (time.perf_counter() - t0)
    assert done.returncode == 0, done.stderr[-2000:]
    total = json.loads((ref / "efficiency.json").read_text())["global_steps"]

    rng = random.Random(1234)
    kills, episode, landed = 0, 0, []
    while kills < KILLS:  # an episode: one run directory, killed three times, then run to completion
        episode += 1
        run, started, in_episode = tmp_path / f"killed-{episode}", False, 0
        for _ in range(20):
            args = _cmd(cfg, f"output.dir={run}")
            if started:  # resumed from its newest complete checkpoint, or started again before the first one
                args += ["--resume"] if _has_checkpoint(run) else ["output.overwrite=true"]
            proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            started = True
            if in_episode < 3:
                done_steps, phase = _where(run)[0], rng.random()
                if phase < 0.15 or done_steps >= total - 1:  # start-up, data preparation, model loading
                    time.sleep(rng.uniform(0.2, startup))
                else:  # just after a later step: in a step, an evaluation, a checkpoint save, or the final save
                    final = in_episode == 2 and phase > 0.6
                    target = total if final else rng.randint(done_steps + 1, total - 1)
                    while proc.poll() is None and _step(run) < target:
                        time.sleep(0.01)
                    time.sleep(rng.uniform(0.0, 1.0 if final else 0.1))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    in_episode += 1
                    landed.append(_where(run))
                    continue
            err = proc.communicate(timeout=300)[1]
            assert proc.returncode == 0, err[-2000:]
            break
        assert json.loads((run / "status.json").read_text())["state"] == "completed"
        assert _metrics(run) == _metrics(ref), f"episode {episode}"
        assert _losses(run) == _losses(ref), f"episode {episode}"
    print("kills landed at (newest complete checkpoint step, half-written checkpoints, partial model):", landed)
    assert len({w[0] for w in landed}) >= 3, landed  # spread over the run, not all at one point
