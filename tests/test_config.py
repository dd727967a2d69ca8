from pathlib import Path

import pytest
import yaml

from tuneforge.config import apply_overrides, dump_config, load_config, validate_config
from tuneforge.config.loader import parse_value
from tuneforge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_complete_and_task_dependent():
    cfg = validate_config({})
    assert cfg.task.type == "classification" and cfg.method.name == "lora"
    # keys whose default depends on the task are resolved, so the saved config is explicit
    assert cfg.data.max_length == 128 and cfg.eval.metric == "accuracy"
    assert cfg.learning_rate == pytest.approx(1e-3)  # LoRA's own default when train.learning_rate is unset
    assert validate_config({"method": {"name": "full"}}).learning_rate == pytest.approx(5e-5)


@pytest.mark.parametrize("raw, expected", [
    ({"train": {"learnin_rate": 1e-4}}, "train.learnin_rate: unknown key (did you mean 'learning_rate'?)"),
    ({"trian": {}}, "trian: unknown section (did you mean 'train'?)"),
    ({"method": {"name": "lorra"}}, "method.name: unknown method 'lorra' (did you mean 'lora'?)"),
    ({"method": {"name": "lora", "alpah": 3}}, "method.alpah: unknown key (did you mean 'alpha'?)"),
    ({"data": {"split": {"valdation": 0.1}}}, "data.split.valdation: unknown key (did you mean 'validation'?)"),
    ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid number"),
    ({"eval": {"metric": "acc"}}, "eval.metric: 'acc' is not a classification metric (did you mean 'accuracy'?)"),
    ({"train": {"eval_strategy": "steps"}}, "train.eval_steps is required"),
    ({"data": {"split": {"validation": 0.5, "test": 0.45}}}, "must leave at least 10% for training"),
    ({"task": {"type": "regression"}}, "task.type: unknown task 'regression'"),
    ({"train": 3}, "train: must be a mapping"),
])
def test_errors_name_the_key(raw, expected):
    with pytest.raises(ConfigError) as exc:
        validate_config(raw)
    assert expected in str(exc.value)
    assert "\n" not in str(exc.value)


def test_several_errors_reported_together():
    with pytest.raises(ConfigError) as exc:
        validate_config({"train": {"epochs": -1, "btch_size": 3}, "model": {"nme": "x"}})
    msg = str(exc.value)
    assert "train.epochs" in msg and "train.btch_size" in msg and "model.nme" in msg


def test_overrides_parse_values_and_create_sections():
    raw = apply_overrides({"train": {"epochs": 3}}, ["train.learning_rate=3e-5", "method.target_modules=[query,value]",
                                                     "train.epochs=1", "output.name=x", "train.max_steps=null"])
    assert raw["train"] == {"epochs": 1, "learning_rate": 3e-5, "max_steps": None}
    assert raw["method"]["target_modules"] == ["query", "value"]
    assert parse_value("true") is True and parse_value("1e-3") == pytest.approx(1e-3) and parse_value("abc") == "abc"
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"train": {"epochs": 1}}, ["train.epochs.x=1"])


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochs: 1\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "configs/quickstart/sentiment-minilm-lora.yaml", ["method.r=4"])
    assert cfg.output.name == "sentiment-minilm-lora"
    text = dump_config(cfg)
    again = validate_config(yaml.safe_load(text))
    assert again.model_dump() == cfg.model_dump() and again.method.r == 4


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")))
def test_every_shipped_config_validates(path):
    load_config(REPO / path)


def test_readme_config_reference_is_in_sync():
    from tuneforge.config.reference import reference_markdown

    readme = (REPO / "README.md").read_text()
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    assert start in readme and end in readme, "README lacks the generated config reference markers"
    block = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert block == reference_markdown().strip(), "README config reference is stale: run `make readme-reference`"


def test_tracker_that_is_not_installed_is_a_config_error(monkeypatch):
    import importlib.util

    from tuneforge.training.engine import report_to

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.report_to: 'mlflow' is not installed"):
        report_to("mlflow")
    assert report_to("none") == "none"


def test_yaml_11_booleans_stay_words_where_a_word_is_meant(tmp_path):
    assert parse_value("no") == "no" and parse_value("off") == "off" and parse_value("false") is False
    cfg = load_config(raw={}, overrides=["train.eval_strategy=no"])
    assert cfg.train.eval_strategy == "no"
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  eval_strategy: no\n")
    assert load_config(p).train.eval_strategy == "no"


def test_method_fills_defaults_it_needs_but_never_overrides_the_user():
    from tuneforge.config import load_config

    base = {"method": {"name": "prefix", "projection": True}}
    assert load_config(raw=base).eval.load_best_model is False  # the projected prefix cannot be reloaded mid-run
    assert load_config(raw={"method": {"name": "prefix", "projection": False}}).eval.load_best_model is True
    with pytest.raises(ConfigError, match="eval.load_best_model: prefix tuning with method.projection"):
        load_config(raw={**base, "eval": {"load_best_model": True}})
