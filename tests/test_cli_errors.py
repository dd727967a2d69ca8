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


def test_missing_data_file(cfg_file, tmp_path):
    check_error(run_cli("train", cfg_file(str(tmp_path / "nope.csv"))), "data file not found", code=3)


def test_unknown_column_lists_available(cfg_file, sentiment_csv):
    check_error(run_cli("train", cfg_file(sentiment_csv), "data.text_column=review"),
                "no column 'review'", "available columns: text, label", code=3)


def test_empty_data(cfg_file, tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("text,label\n")
    check_error(run_cli("train", cfg_file(str(p))), "contains no rows", code=3)


def test_single_class(cfg_file, tmp_path):
    p = tmp_path / "one.csv"
    pd.DataFrame([r for r in make_sentiment_rows(40) if r["label"] == "positive"]).to_csv(p, index=False)
    check_error(run_cli("train", cfg_file(str(p))), "single class", code=3)


def test_unreadable_encoding(cfg_file, tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("text,label\ntr\xe8s bien,pos\nmal,neg\n".encode("latin-1"))
    check_error(run_cli("train", cfg_file(str(p))), "cannot be read as UTF-8", code=3)


def test_label_in_test_never_seen(cfg_file, sentiment_csv, tmp_path):
    p = tmp_path / "test.csv"
    pd.DataFrame([{"text": "fine", "label": "neutral"}]).to_csv(p, index=False)
    check_error(run_cli("train", cfg_file(sentiment_csv), f"data.test={p}"), "never seen in training", "neutral")


def test_hub_id_offline(cfg_file, sentiment_csv):
    last = check_error(run_cli("train", cfg_file(sentiment_csv), "model.name=someorg/some-model"),
                       "someorg/some-model", "could not be downloaded", code=4)
    assert "builtin:minilm-l6" in last


def test_unknown_config_key(cfg_file, sentiment_csv):
    check_error(run_cli("train", cfg_file(sentiment_csv), "train.learnig_rate=1e-4"),
                "train.learnig_rate: unknown key (did you mean 'learning_rate'?)", code=2)


def test_missing_config_file(tmp_path):
    check_error(run_cli("validate", str(tmp_path / "nope.yaml")), "config file not found", code=2)


def test_predict_on_missing_run(tmp_path):
    check_error(run_cli("predict", str(tmp_path / "norun"), "text"), "run directory not found")


def test_debug_shows_traceback(cfg_file, tmp_path):
    proc = run_cli("train", cfg_file(str(tmp_path / "nope.csv")), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_failed_run_is_marked_failed(cfg_file, tmp_path):
    import json

    run_cli("train", cfg_file(str(tmp_path / "nope.csv")))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "data file not found" in status["error"]
    assert not (tmp_path / "run" / "model").exists()
