"""`tuneforge search`: space parsing and validation, conditional sampling, and real CLI studies on the tiny model
(pruning, outputs, resume after kill -9, two worker processes sharing one study, a different space refused)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, make_sentiment_rows, tiny_config

optuna = pytest.importorskip("optuna")

from tuneforge.errors import ConfigError  # noqa: E402
from tuneforge.search import space as sp  # noqa: E402
from tuneforge.search.space_check import validate_space  # noqa: E402


# ---- the space: parsing and validation (no training) ---------------------------------------------------------------
def _base(model: str = "some/model", method: str = "lora") -> dict:
    cfg = tiny_config(model, "data.csv", "out", method=method)
    del cfg["output"]
    return cfg


def _check(space: dict, base: dict | None = None):
    params = sp.parse_space(space)
    validate_space(params, base or _base())
    return params


@pytest.mark.unit
@pytest.mark.parametrize(
    "space, expected",
    [
        (
            {"train.learnin_rate": {"float": [1e-5, 1e-3]}},
            ["train.learnin_rate: not a config key", "did you mean 'train.learning_rate'"],
        ),
        ({"trian.batch_size": {"choice": [8, 16]}}, ["trian.batch_size: not a config key", "train.batch_size"]),
        ({"train.learning_rate": {"float": [1e-3, 1e-5], "log": True}}, ["train.learning_rate: inverted range"]),
        ({"train.warmup_ratio": {"float": [0.1, 0.1]}}, ["train.warmup_ratio: empty range"]),
        ({"train.batch_size": {"choice": []}}, ["train.batch_size: choice has no values"]),
        ({"method.name": {"choice": {}}}, ["method.name: choice has no values"]),
        ({"train.learning_rate": {"flot": [1e-5, 1e-3]}}, ["unknown spec kind 'flot'", "did you mean 'float'"]),
        (
            {"train.learning_rate": {"float": {"a": {"method.r": {"int": [2, 4]}}}}},
            ["train.learning_rate: only a choice can have sub-spaces"],
        ),
        ({"train.learning_rate": {"float": [0.0, 1e-3], "log": True}}, ["a log range needs low > 0"]),
        ({"method.r": {"int": [2.5, 8]}}, ["method.r: int bounds must be integers"]),
        ({"train.batch_size": {"choice": [0, 16]}}, ["train.batch_size: 0 gives an invalid config", "greater than"]),
        ({"train.warmup_ratio": {"float": [0.0, 1.5]}}, ["train.warmup_ratio: 1.5 gives an invalid config"]),
        (
            {"method.name": {"choice": ["lora", "full"]}, "method.r": {"int": [2, 8]}},
            ["method.r (with method.name=full): method 'full' has no key 'r'", "lora"],
        ),
        (
            {"method.name": {"choice": {"lora": {"method.rr": {"int": [2, 8]}}, "full": None}}},
            ["method.rr (with method.name=lora): not a config key", "did you mean 'method.r'"],
        ),
        ({"train.batch_size": {"choice": [8, 16], "log": True}}, ["'log' does not apply to choice"]),
        ({"train.learning_rate": 0.001}, ["train.learning_rate: give a spec"]),
    ],
)
def test_space_errors_name_the_key(space, expected):
    with pytest.raises(ConfigError) as err:
        _check(space)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300
    for part in expected:
        assert part in msg, msg


@pytest.mark.unit
def test_space_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        sp.load_space(tmp_path / "nope.yaml")
    (tmp_path / "s.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        sp.load_space(tmp_path / "s.yaml")


@pytest.mark.unit
def test_grid_needs_a_finite_space():
    params = sp.parse_space({"train.batch_size": {"choice": [8, 16]}, "method.r": {"choice": [2, 4, 8]}})
    assert sp.grid(params) == {"train.batch_size": [8, 16], "method.r": [2, 4, 8]} and sp.grid_size(params) == 6
    with pytest.raises(ConfigError, match="train.learning_rate is a float range"):
        sp.grid(sp.parse_space({"train.learning_rate": {"float": [1e-5, 1e-3]}}))


@pytest.mark.unit
def test_conditional_space_samples_only_the_chosen_branch():
    space = {
        "train.batch_size": {"choice": [8, 16]},
        "method.name": {
            "choice": {
                "lora": {
                    "method.r": {"int": [2, 16], "log": True},
                    "method.dropout": {"float": [0.0, 0.2]},
                    "train.learning_rate": {"float": [1e-4, 1e-2], "log": True},
                },
                "full": {"train.learning_rate": {"float": [1e-5, 1e-3], "log": True}},
            }
        },
    }
    params = _check(space)
    # one key in two branches: two Optuna parameters (their ranges differ)
    names = {p.name for p in sp.walk(params)}
    assert {"train.learning_rate@method.name=lora", "train.learning_rate@method.name=full"} <= names
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = sp.sample(trial, params)
        method = values["method.name"]
        seen.add(method)
        if method == "full":
            assert "method.r" not in values and "method.dropout" not in values
            assert 1e-5 <= values["train.learning_rate"] <= 1e-3
            assert not any(k.startswith("method.") and k != "method.name" for k in trial.params)
        else:
            assert 2 <= values["method.r"] <= 16 and 0.0 <= values["method.dropout"] <= 0.2
        raw = sp.apply(_base(), values)
        from tuneforge.config import validate_config

        cfg = validate_config(raw)  # every sampled config is a valid run config
        assert cfg.method.name == method
        study.tell(trial, 0.5)
    assert seen == {"lora", "full"}


@pytest.mark.unit
def test_fingerprint_changes_with_the_space():
    a = sp.parse_space({"train.batch_size": {"choice": [8, 16]}})
    b = sp.parse_space({"train.batch_size": {"choice": [8, 32]}})
    assert sp.fingerprint(a) == sp.fingerprint(sp.parse_space({"train.batch_size": {"choice": [8, 16]}}))
    assert sp.fingerprint(a) != sp.fingerprint(b)


# ---- real studies through the CLI ---------------------------------------------------------------------------------
def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


@pytest.fixture
def study_files(tmp_path, tiny_bert):
    """A base config (tiny BERT, a few steps, an evaluation every 3 steps, loss as the selection metric so trials
    differ) and a space whose learning rates make some trials clearly worse (what the median pruner prunes)."""
    import pandas as pd

    data = tmp_path / "data.csv"
    pd.DataFrame(make_sentiment_rows(96)).to_csv(data, index=False)
    cfg = tiny_config(tiny_bert, str(data), "unused", method="lora")
    del cfg["output"]
    cfg["train"].update(
        {"max_steps": 12, "epochs": 1, "eval_strategy": "steps", "eval_steps": 3, "logging_steps": 3, "batch_size": 8}
    )
    cfg["eval"] = {"metric": "loss", "load_best_model": False}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    space = {
        "train.learning_rate": {"float": [1e-6, 5e-2], "log": True},
        "method.name": {"choice": {"lora": {"method.r": {"choice": [2, 4]}}, "full": None}},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    return tmp_path


def _search(d: Path, *extra: str, study_dir: str = "study", timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", "search", "base.yaml", "--space", "space.yaml", "--out", study_dir, *extra],
        cwd=d,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )


def _trials(d: Path, study_dir: str = "study", name: str = "base"):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{d / study_dir / 'study.db'}")
    return study.get_trials(deepcopy=False)


@pytest.mark.integration
def test_cli_study_end_to_end_with_pruning(study_files, capsys):
    d = study_files
    r = _search(d, "--trials", "7", "--sampler", "random", "--seed", "3", "--pruner", "median")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("trial ") and "(#" in ln]
    assert len(lines) == 7 and "loss=" in lines[0] and "lr=" in lines[0], r.stderr[-2000:]
    trials = _trials(d)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 7 and "PRUNED" in states, states
    pruned = next(t for t in trials if t.state.name == "PRUNED")
    status = json.loads((d / "study" / "trials" / f"trial-{pruned.number}" / "status.json").read_text())
    assert status["state"] == "pruned" and status["pruned_at_step"] == pruned.user_attrs["pruned_at_step"]
    assert not (d / "study" / "trials" / f"trial-{pruned.number}" / "model").exists()
    assert any(f"[pruned at step {status['pruned_at_step']}]" in ln for ln in lines)
    for t in trials:  # each trial: a normal run directory scored on validation, its test split never evaluated
        run = d / "study" / "trials" / f"trial-{t.number}"
        st = json.loads((run / "status.json").read_text())
        assert st["state"] == {"COMPLETE": "completed", "PRUNED": "pruned"}[t.state.name]
        assert st["metrics_split"] == "validation" and (run / "config.yaml").is_file()
        assert (run / "metrics.jsonl").is_file() and (run / "data" / "split").is_dir()
        if t.state.name == "COMPLETE":
            metrics = json.loads((run / "eval" / "metrics.json").read_text())
            assert "test" not in metrics and metrics["validation"]["loss"] == pytest.approx(t.value)
        if t.user_attrs["params"]["method.name"] == "full":
            assert "method.r" not in t.user_attrs["params"]
    # outputs
    rows = (d / "study" / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,loss,duration_s") and len(rows) == 8
    assert "pruned" in (d / "study" / "trials.csv").read_text()
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    test = json.loads((d / "study" / "test.json").read_text())
    assert test["trial"] == best.number and test["split"] == "test" and "accuracy" in test["metrics"]
    html = (d / "study" / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html and 'src="http' not in html
    assert (d / "study" / "plots" / "history.png").is_file()
    from tuneforge.config import load_config

    cfg = load_config(d / "study" / "best.yaml")  # what `tuneforge train best.yaml` runs
    assert cfg.train.learning_rate == pytest.approx(best.user_attrs["params"]["train.learning_rate"])
    assert cfg.output.dir is None and cfg.output.name == "base-best"
    # `search summary` prints the table again; the same study name with another space is refused before any trial
    from tuneforge.cli.app import main

    (d / "space2.yaml").write_text(yaml.safe_dump({"train.learning_rate": {"float": [1e-4, 1e-2]}}))
    old = os.getcwd()
    os.chdir(d)
    try:
        assert main(["search", "summary", "study"]) == 0
        out = capsys.readouterr()
        assert "study base: 7 trials" in out.out and "pruned@" in out.out, out
        assert main(["search", "base.yaml", "--space", "space2.yaml", "--out", "study", "--trials", "8"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: study 'base'") and "different search space" in err and "\n" not in err, err
    finally:
        os.chdir(old)
    assert len(_trials(d)) == 7


@pytest.mark.unit
def test_cli_refusals_are_one_line(study_files, capsys):
    from tuneforge.cli.app import main

    d = study_files
    (d / "bad.yaml").write_text(yaml.safe_dump({"train.learnin_rate": {"float": [1e-4, 1e-2]}}))
    old = os.getcwd()
    os.chdir(d)
    try:
        cases = [
            (["search", "base.yaml", "--space", "bad.yaml"], "did you mean 'train.learning_rate'"),
            (["search", "base.yaml", "--space", "space.yaml", "--sampler", "grid"], "grid needs a finite space"),
            (["search", "base.yaml", "--space", "space.yaml", "--sampler", "tpee"], "did you mean 'tpe'"),
            (
                ["search", "base.yaml", "--space", "space.yaml", "--objectives", "quality,time", "--pruner", "median"],
                "single-objective",
            ),
            (["search", "base.yaml"], "--space"),
            (["search", "summary", "nowhere"], "not a study directory"),
        ]
        for argv, expected in cases:
            code = main(argv)
            err = capsys.readouterr().err.strip()
            assert code != 0 and err.startswith("error: ") and "\n" not in err and expected in err, (argv, err)
    finally:
        os.chdir(old)
    assert not (d / "studies").exists()  # nothing written for a refused search


@pytest.mark.integration
def test_resume_after_kill_during_a_trial(study_files):
    d = study_files
    base = yaml.safe_load((d / "base.yaml").read_text())
    base["train"]["max_steps"] = 60  # long enough to be killed inside trial 1
    (d / "base.yaml").write_text(yaml.safe_dump(base))
    cmd = [
        sys.executable,
        "-m",
        "tuneforge",
        "search",
        "base.yaml",
        "--space",
        "space.yaml",
        "--out",
        "study",
        "--trials",
        "3",
        "--pruner",
        "none",
        "--sampler",
        "random",
        "--seed",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=d, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = d / "study" / "trials" / "trial-1"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            rows = (victim / "metrics.jsonl").read_text().splitlines() if (victim / "metrics.jsonl").is_file() else []
            if len(rows) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the search ended before it could be killed: " + proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert json.loads((victim / "status.json").read_text())["state"] == "running"
    r = subprocess.run(cmd, cwd=d, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "marked failed the trial(s) 1" in r.stderr
    trials = _trials(d)
    by_state = {}
    for t in trials:
        by_state.setdefault(t.state.name, []).append(t.number)
    assert by_state["FAIL"] == [1] and len(by_state["COMPLETE"]) == 3, by_state
    assert len(trials) == 4 and sorted(t.number for t in trials) == [0, 1, 2, 3]
    st = json.loads((victim / "status.json").read_text())
    assert st["state"] == "failed" and "killed" in st["error"]
    assert "error" in trials[1].user_attrs
    csv_rows = (d / "study" / "trials.csv").read_text().splitlines()[1:]
    assert sorted(int(r.split(",")[0]) for r in csv_rows) == [0, 1, 2, 3]  # no trial counted twice


@pytest.mark.integration
def test_two_workers_share_one_study(study_files):
    d = study_files
    r = _search(d, "--trials", "4", "--workers", "2", "--pruner", "none", "--sampler", "random", "--seed", "5")
    assert r.returncode == 0, r.stderr[-3000:]
    trials = _trials(d)
    assert [t.state.name for t in trials].count("COMPLETE") == 4 and len(trials) == 4
    workers = {t.user_attrs["worker"] for t in trials}
    pids = {t.user_attrs["pid"] for t in trials}
    assert workers == {0, 1} and len(pids) == 2 and os.getpid() not in pids
    for t in trials:  # each trial's run was trained by the worker process that holds it
        status = json.loads((d / "study" / "trials" / f"trial-{t.number}" / "status.json").read_text())
        assert status["pid"] == t.user_attrs["pid"]
    assert (d / "study" / "best.yaml").is_file() and (d / "study" / "report.html").is_file()


@pytest.mark.unit
def test_storage_urls_are_shown_without_their_password():
    from tuneforge.search.plan import redact

    assert redact("postgresql+psycopg://bob:secret@db:5432/s") == "postgresql+psycopg://bob:***@db:5432/s"
    assert redact("postgresql://postgres@127.0.0.1:5432/s") == "postgresql://postgres@127.0.0.1:5432/s"
    assert redact("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"


@pytest.mark.unit
@pytest.mark.parametrize(
    "space, config",
    [
        ("configs/search/sentiment-minilm-lora-space.yaml", "configs/quickstart/sentiment-minilm-lora.yaml"),
        ("configs/search/identity-smollm2-lora-space.yaml", "configs/quickstart/identity-smollm2-lora.yaml"),
    ],
)
def test_shipped_spaces_validate_against_their_quickstart(space, config):
    """Every key and range of a shipped space is a valid setting of the config it is for (the shipped spaces are
    left out of the every-config tests, which read run configs)."""
    import copy

    from tuneforge.config.yaml_reader import read_yaml
    from tuneforge.search import space as sp

    from conftest import REPO

    params = sp.load_space(str(REPO / space))
    assert params
    validate_space(params, copy.deepcopy(read_yaml(REPO / config)), where=f"{Path(space).name}: ")


@pytest.mark.integration
def test_two_objectives_give_a_pareto_front(study_files):
    """--objectives quality,params: no pruning, trials.csv gives each trial's trainable parameters and whether it is
    on the Pareto front (the smallest model among trials of equal loss is on it), best.yaml is a front member."""
    import csv

    d = study_files
    r = _search(d, "--trials", "4", "--sampler", "random", "--seed", "5", "--objectives", "quality,params")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(d / "study" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {"loss", "trainable_params", "pareto"} <= set(rows[0])
    done = [r for r in rows if r["state"] == "complete"]
    front = [r for r in done if r["pareto"] == "True"]
    assert front
    for r in done:  # a trial off the front is dominated by a front member
        if r["pareto"] != "True":
            assert any(
                float(f["loss"]) <= float(r["loss"]) and int(f["trainable_params"]) <= int(r["trainable_params"])
                for f in front
            ), r
    from tuneforge.config import load_config

    best = load_config(d / "study" / "best.yaml")
    assert best.train.learning_rate in [pytest.approx(float(f["train.learning_rate"])) for f in front]
