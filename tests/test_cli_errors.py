"""Every user error of the CLI: one line naming the problem, a non-zero exit, no traceback."""

import pandas as pd
import pytest

from conftest import make_sentiment_rows, run_cli, tiny_config


def check_error(proc, *needles, code=None):
    err = proc.stderr.strip()
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if code is not None:
        assert proc.returncode == code
    assert "Traceback" not in proc.stderr
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err
    for n in needles:
        assert n in last, last
    return last


@pytest.fixture
def cfg_file(tiny_bert, tmp_path, write_yaml):
    def make(data, **extra):
        return write_yaml(tiny_config(tiny_bert, data, str(tmp_path / "run"), **extra))

    return make


@pytest.mark.integration
def test_missing_data_file(cfg_file, tmp_path):
    # through the real console entry point once, in a process of its own: its stderr and its exit status
    check_error(run_cli("train", cfg_file(str(tmp_path / "nope.csv")), isolated=True), "data file not found", code=3)


@pytest.mark.unit
def test_unknown_column_lists_available(cfg_file, sentiment_csv):
    check_error(
        run_cli("train", cfg_file(sentiment_csv), "data.text_column=review"),
        "no column 'review'",
        "available columns: text, label",
        code=3,
    )


@pytest.mark.unit
def test_empty_data(cfg_file, tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("text,label\n")
    check_error(run_cli("train", cfg_file(str(p))), "contains no rows", code=3)


@pytest.mark.unit
def test_single_class(cfg_file, tmp_path):
    p = tmp_path / "one.csv"
    pd.DataFrame([r for r in make_sentiment_rows(40) if r["label"] == "positive"]).to_csv(p, index=False)
    check_error(run_cli("train", cfg_file(str(p))), "single class", code=3)


@pytest.mark.unit
def test_unreadable_encoding(cfg_file, tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("text,label\ntr\xe8s bien,pos\nmal,neg\n".encode("latin-1"))
    check_error(run_cli("train", cfg_file(str(p))), "cannot be read as UTF-8", code=3)


@pytest.mark.unit
def test_label_in_test_never_seen(cfg_file, sentiment_csv, tmp_path):
    p = tmp_path / "test.csv"
    pd.DataFrame([{"text": "fine", "label": "neutral"}]).to_csv(p, index=False)
    check_error(run_cli("train", cfg_file(sentiment_csv), f"data.test={p}"), "never seen in training", "neutral")


@pytest.mark.unit
def test_hub_id_offline(cfg_file, sentiment_csv):
    last = check_error(
        run_cli("train", cfg_file(sentiment_csv), "model.name=someorg/some-model"),
        "someorg/some-model",
        "could not be downloaded",
        code=4,
    )
    assert "builtin:minilm-l6" in last


@pytest.mark.unit
def test_unknown_config_key(cfg_file, sentiment_csv):
    check_error(
        run_cli("train", cfg_file(sentiment_csv), "train.learnig_rate=1e-4"),
        "train.learnig_rate: unknown key (did you mean 'learning_rate'?)",
        code=2,
    )


@pytest.mark.unit
def test_missing_config_file(tmp_path):
    check_error(run_cli("validate", str(tmp_path / "nope.yaml")), "config file not found", code=2)


@pytest.mark.unit
def test_predict_on_missing_run(tmp_path):
    check_error(run_cli("predict", str(tmp_path / "norun"), "text"), "run directory not found")


@pytest.mark.integration
def test_debug_shows_traceback(cfg_file, tmp_path):
    proc = run_cli("train", cfg_file(str(tmp_path / "nope.csv")), "--debug", isolated=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.unit
def test_failed_run_is_marked_failed(cfg_file, tmp_path):
    import json

    run_cli("train", cfg_file(str(tmp_path / "nope.csv")))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "data file not found" in status["error"]
    assert not (tmp_path / "run" / "model").exists()


# ---- in-process: usage errors and config problems that used to surface late, generic or multi-line ----------
def cli(capsys, *args):
    from tuneforge.cli.app import main

    capsys.readouterr()
    code = main(list(args))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("tuneforge: ")]
    return code, lines


@pytest.mark.unit
def test_click_usage_errors_are_one_line_exit_2(capsys, tmp_path):
    cfg = tmp_path / "base.yaml"
    cfg.write_text("method: {name: lora}\n")
    for args, needle in (
        (["validate", str(cfg), "--resume=1"], "No such option: --resume"),
        (["train", str(cfg), "--resume=1"], "--resume"),
        (["validate"], "Missing argument"),
        (["no-such-command"], "No such command"),
    ):
        code, lines = cli(capsys, *args)
        assert code == 2 and len(lines) == 1, (args, lines)
        assert lines[0].startswith("error: ") and needle in lines[0] and "NoSuchOption" not in lines[0]


@pytest.mark.unit
@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.seed=-1", "train.seed:"),
        ("train.seed=99999999999999", "train.seed:"),
        ("train.save_steps=5", "train.save_steps:"),
        ("output.name=../../x", "output.name:"),
        ("train.batch_size=true", "train.batch_size:"),
        ("method.target_modules=([", "method.target_modules:"),
        pytest.param(
            "train.compile=true",
            "train.compile:",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CPU answer"),
        ),
        pytest.param(
            "train.precision=fp16",
            "train.precision:",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CPU answer"),
        ),
        pytest.param(
            "train.liger=true",
            "train.liger:",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CPU answer"),
        ),
    ],
)
def test_train_refuses_before_creating_the_run_directory(capsys, tmp_path, override, needle):
    cfg = tmp_path / "base.yaml"
    cfg.write_text(f"method: {{name: lora}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    for command in ("validate", "train"):
        code, lines = cli(capsys, command, str(cfg), override)
        assert code == 2 and len(lines) == 1 and needle in lines[0], (command, lines)
        assert len(lines[0]) < 300
    assert not (tmp_path / "run").exists()


@pytest.mark.unit
def test_uninstalled_tracker_is_refused_by_validate(capsys, tmp_path, monkeypatch):
    from tuneforge.config import environment

    monkeypatch.setattr(environment, "installed", lambda name: name != "mlflow")
    cfg = tmp_path / "base.yaml"
    cfg.write_text("train: {report_to: mlflow}\n")
    code, lines = cli(capsys, "validate", str(cfg))
    assert code == 2 and lines == [
        "error: invalid config: train.report_to: 'mlflow' is not installed (pip install mlflow), or use 'none'"
    ]


@pytest.mark.unit
def test_error_lines_are_short_whatever_the_input(capsys, tmp_path):
    cfg = tmp_path / "base.yaml"
    cfg.write_text("train:\n  epochs: " + "9" * 5000 + "\n")
    code, lines = cli(capsys, "validate", str(cfg))
    assert code == 2 and len(lines) == 1 and "base.yaml: malformed YAML at line 2" in lines[0]
    cfg.write_text("train: " + "[" * 5000 + "\n")
    code, lines = cli(capsys, "validate", str(cfg))
    assert code == 2 and len(lines) == 1 and "base.yaml: malformed YAML at line 1" in lines[0]
    cfg.write_text("{}\n")
    for override in ("train.epochs=" + "x" * 100_000, "x" * 100_000 + "=1", "method.name=" + "y" * 100_000):
        code, lines = cli(capsys, "validate", str(cfg), override)
        assert code == 2 and len(lines) == 1 and len(lines[0]) < 300 and "…" in lines[0], lines


@pytest.mark.unit
def test_a_long_line_shortens_a_deep_path_before_it_cuts_the_problem():
    from tuneforge.cli.app import error_line

    deep = "/tmp/pytest-of-root/pytest-1000/popen-gw0/test_sft_bad_data_sharegpt_wro0/chat.jsonl"
    problem = (
        "record 8: field 'conversations'[1].from: unknown role 'agent'; map it with data.roles "
        "(known: assistant, bot, chatgpt, gpt, human, model, system, user) "
        "(or set data.bad_records=skip to leave such records out)"
    )
    line = error_line(f"{deep}: {problem}")
    assert line == f"error: …/test_sft_bad_data_sharegpt_wro0/chat.jsonl: {problem}" and len(line) < 300
    assert error_line(f"{problem} in /a/b.jsonl") == f"error: {problem} in /a/b.jsonl"  # short paths stay whole


@pytest.mark.unit
def test_unexpected_errors_are_still_one_short_line(capsys, monkeypatch, tmp_path):
    from tuneforge.config import loader

    def boom(*a, **k):
        raise RuntimeError("x" * 10_000 + "\nsecond line")

    monkeypatch.setattr(loader, "read_yaml", boom)
    monkeypatch.delenv("TUNEFORGE_DEBUG", raising=False)
    code, lines = cli(capsys, "validate", str(tmp_path / "c.yaml"))
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: RuntimeError: ") and len(lines[0]) < 300


@pytest.mark.unit
def test_text_pair_column_equal_to_text_column_is_refused_in_one_line(capsys, tmp_path):
    cfg = tmp_path / "base.yaml"
    cfg.write_text(f"data: {{text_column: review}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    for command in ("validate", "train"):
        code, lines = cli(capsys, command, str(cfg), "data.text_pair_column=review")
        assert code == 2 and len(lines) == 1, (command, lines)
        assert "data.text_pair_column: 'review' is also data.text_column" in lines[0], lines
    assert not (tmp_path / "run").exists()
