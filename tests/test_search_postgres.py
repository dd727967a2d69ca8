"""Two `tuneforge search` workers share one study through PostgreSQL (--storage postgresql+psycopg://...), started at
the same moment on an empty database (both race to create Optuna's tables and the study), on the tiny model: the
study ends with the requested trials, numbered once each, and both processes trained some of them into the shared
study directory (trials/trial-<number>/, normal run directories). The server: tests/pg_server.py."""

import json
import subprocess
import sys

import pytest
import yaml

from pg_server import postgres_server  # noqa: F401  (the session fixture)

from conftest import make_sentiment_rows, tiny_config

pytestmark = pytest.mark.integration
optuna = pytest.importorskip("optuna")

TRIALS = 6  # the study's total (--trials: finished trials the study should have), shared by both workers


def test_two_workers_share_one_postgres_study(tiny_bert, postgres_server, tmp_path):  # noqa: F811
    import os

    import pandas as pd

    url = postgres_server.new_database("search_workers")
    data = tmp_path / "sentiment.csv"
    pd.DataFrame(make_sentiment_rows(96)).to_csv(data, index=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_bert, str(data), str(tmp_path / "unused"))))
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump({"train.learning_rate": {"float": [1e-3, 1e-2], "log": True}, "method.r": {"choice": [2, 4]}})
    )
    study_dir = tmp_path / "study"
    cmd = [
        sys.executable,
        "-m",
        "tuneforge",
        "search",
        str(cfg),
        "--space",
        str(space),
        "--trials",
        str(TRIALS),
        "--study",
        "shared",
        "--storage",
        url,
        "--out",
        str(study_dir),
        "--sampler",
        "random",
        "--pruner",
        "none",
        "train.max_steps=2",
        "train.epochs=1",
        "train.eval_batch_size=32",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    workers = [
        subprocess.Popen(cmd + ["--seed", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(2)
    ]
    for proc in workers:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"worker {proc.pid} failed:\n{out[-2000:]}\n{err[-3000:]}"

    assert optuna.get_all_study_names(storage=url) == ["shared"]  # one study, not one per worker
    trials = optuna.load_study(study_name="shared", storage=url).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), numbers  # numbered once each, no gaps
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS, [
        (t.number, t.state) for t in trials
    ]
    # every trial trained its own run directory in the one study directory, inside the worker process that asked
    # for it (the default --workers 1): the trial's pid attribute and its run's status.json name that worker
    pids = set()
    for t in trials:
        status = json.loads((study_dir / "trials" / f"trial-{t.number}" / "status.json").read_text())
        assert status["state"] == "completed", status
        assert status.get("pid") == t.user_attrs.get("pid"), (status, t.user_attrs)
        pids.add(t.user_attrs.get("pid"))
    assert pids == {proc.pid for proc in workers}, "both workers should have trained trials of the shared study"
    assert (study_dir / "trials.csv").is_file() and (study_dir / "best.yaml").is_file()
