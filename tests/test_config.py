from pathlib import Path

import pytest
import yaml

from tuneforge.config import apply_overrides, dump_config, load_config, validate_config
from tuneforge.config.overrides import parse_value
from tuneforge.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_complete_and_task_dependent():
    cfg = validate_config({})
    assert cfg.task.type == "classification" and cfg.method.name == "lora"
    # keys whose default depends on the task are resolved, so the saved config is explicit
    assert cfg.data.max_length == 128 and cfg.eval.metric == "accuracy"
    assert cfg.learning_rate == pytest.approx(1e-3)  # LoRA's own default when train.learning_rate is unset
    assert validate_config({"method": {"name": "full"}}).learning_rate == pytest.approx(5e-5)


@pytest.mark.parametrize(
    "raw, expected",
    [
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
    ],
)
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
    raw = apply_overrides(
        {"train": {"epochs": 3}},
        [
            "train.learning_rate=3e-5",
            "method.target_modules=[query,value]",
            "train.epochs=1",
            "output.name=x",
            "train.max_steps=null",
        ],
    )
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


# configs/search/ holds `tuneforge search` spaces, not run configs (the search tests validate them)
@pytest.mark.parametrize(
    "path",
    sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "configs").rglob("*.yaml")
        if p.relative_to(REPO / "configs").parts[0] != "search"
    ),
)
def test_every_shipped_config_validates(path):
    import yaml

    if (yaml.safe_load((REPO / path).read_text()).get("distill") or {}).get("teacher"):
        # the teacher is a run another shipped config trains (see the file's comment): machine checks, which
        # include that the teacher exists, run where it does (test_shipped_configs_train gives it one)
        load_config(REPO / path, environment=False)
    else:
        load_config(REPO / path)


def test_docs_config_reference_is_in_sync():
    from tuneforge.config.reference import reference_markdown

    page = (REPO / "docs" / "config-reference.md").read_text()
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    assert start in page and end in page, "docs/config-reference.md lacks the generated config reference markers"
    block = page.split(start, 1)[1].split(end, 1)[0].strip()
    assert block == reference_markdown().strip(), "docs/config-reference.md is stale: run `make docs-reference`"


def test_tracker_that_is_not_installed_is_a_config_error(monkeypatch):
    import importlib.util

    from tuneforge.training.arguments import report_to

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

    # causal LMs take PEFT's prefix path, whose projected prefix cannot be reloaded mid-run (encoders use our own)
    base = {"task": {"type": "causal_lm"}, "method": {"name": "prefix", "projection": True}}
    assert load_config(raw=base).eval.load_best_model is False
    assert load_config(raw={**base, "method": {"name": "prefix", "projection": False}}).eval.load_best_model is True
    assert load_config(raw={"method": {"name": "prefix", "projection": True}}).eval.load_best_model is True
    with pytest.raises(ConfigError, match="eval.load_best_model: prefix tuning with method.projection"):
        load_config(raw={**base, "eval": {"load_best_model": True}})


# ---- hardening: every bad value is a one-line ConfigError naming its key, found before any model loads ----


def config_error(raw=None, overrides=(), path=None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path, list(overrides), raw=raw if path is None else None)
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 293, msg
    return msg


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.seed=-1", "train.seed"),
        ("train.seed=99999999999999", "train.seed"),
        ("train.seed=4294967296", "train.seed"),
        ("data.split.seed=-5", "data.split.seed"),
        ("data.augment.seed=1e20", "data.augment.seed"),
    ],
)
def test_seeds_outside_what_torch_and_numpy_accept(override, key):
    assert key + ":" in config_error({}, [override])
    assert load_config(raw={}, overrides=["train.seed=4294967295"]).train.seed == 2**32 - 1


def test_invalid_target_modules_regex_names_the_key():
    msg = config_error({}, ["method.target_modules=(["])
    assert "method.target_modules: '([' is an invalid regular expression" in msg and "error: error" not in msg
    msg = config_error({"method": {"name": "ia3", "target_modules": "query", "feedforward_modules": "(["}})
    assert "method.feedforward_modules: '([' is an invalid regular expression" in msg
    assert load_config(raw={}, overrides=["method.target_modules=.*(query|value)"]).method.target_modules


def test_ia3_feedforward_modules_must_be_a_subset_of_target_modules():
    msg = config_error(
        {"method": {"name": "ia3", "target_modules": ["query", "value"], "feedforward_modules": ["output.dense"]}}
    )
    assert "method.feedforward_modules: must be a subset of method.target_modules" in msg and "output.dense" in msg
    load_config(
        raw={
            "method": {
                "name": "ia3",
                "target_modules": ["query", "output.dense"],
                "feedforward_modules": ["output.dense"],
            }
        }
    )


def test_checkpoints_must_coincide_with_evaluations_for_best_model_loading():
    steps = ["train.eval_strategy=steps", "train.eval_steps=3"]
    assert "train.save_steps: 5 is not a multiple of train.eval_steps (3)" in config_error(
        {}, steps + ["train.save_steps=5"]
    )
    assert load_config(raw={}, overrides=steps + ["train.save_steps=6"]).train.save_steps == 6
    load_config(raw={}, overrides=steps + ["train.save_steps=5", "eval.load_best_model=false"])
    assert "train.save_steps: with eval.load_best_model" in config_error({}, ["train.save_steps=5"])
    assert "train.early_stopping.patience" in config_error(
        {}, ["train.eval_strategy=no", "train.early_stopping.patience=2"]
    )


@pytest.mark.parametrize(
    "override, key, words",
    [
        ("train.eval_batch_size=1e30", "train.eval_batch_size", "too large"),
        ("train.batch_size=true", "train.batch_size", "not a boolean"),
        ("train.learning_rate=false", "train.learning_rate", "not a boolean"),
        ("train.epochs=.inf", "train.epochs", "finite"),
        ("method.r=true", "method.r", "not a boolean"),
        ("data.balance.class_weights={a: true}", "data.balance.class_weights", "not a boolean"),
        ("data.augment.num_per_example=true", "data.augment.num_per_example", "not a boolean"),
        ("train.epochs=" + "9" * 5000, "train.epochs", "too large"),
        ("train.epochs=" + "[" * 5000, "train.epochs", "nested"),
    ],
)
def test_booleans_and_huge_numbers_never_pass_as_numbers(override, key, words):
    msg = config_error({}, [override])
    assert msg.startswith("invalid config: " + key + ":") or msg.startswith(key + ":"), msg
    assert words in msg


def test_yaml_files_nested_too_deep_or_with_huge_numbers_name_the_file_and_line(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("train: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "deep.yaml: malformed YAML at line 1" in config_error(path=deep)
    nested = tmp_path / "nested.yaml"
    nested.write_text("".join("  " * i + f"k{i}:\n" for i in range(3000)))
    assert "nested.yaml: malformed YAML at line" in config_error(path=nested)
    big = tmp_path / "big.yaml"
    big.write_text("train:\n  epochs: " + "9" * 5000 + "\n")
    assert "big.yaml: malformed YAML at line 2" in config_error(path=big)


def test_output_name_must_be_a_plain_name(tmp_path):
    for bad in ("../../x", "a/b", "..", "x\\y"):
        assert "output.name: must be a plain name" in config_error({}, [f"output.name={bad}"])
    assert load_config(raw={}, overrides=["output.name=my-run_2.a"]).output.name == "my-run_2.a"


def test_long_values_are_cut_in_messages():
    huge = "x" * 100_000
    for override in (
        f"train.epochs={huge}",
        f"method.name={huge}",
        f"train.{huge}=1",
        f"{huge}.a=1",
        f"output.name={huge}",
        f"method.target_modules=({huge}",
    ):
        msg = config_error({}, [override])
        assert "…" in msg and len(msg) < 293


def test_many_errors_stay_one_short_line():
    raw = {"train": {f"unknown_key_{i}": i for i in range(40)}}
    msg = config_error(raw)
    assert msg.startswith("invalid config: train.unknown_key_0: unknown key") and "more)" in msg


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU answer")
@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.precision=fp16", "train.precision: 'fp16' mixed precision needs a GPU"),
        ("train.precision=bf16", "train.precision: 'bf16' needs a GPU or a CPU with bf16 units"),
        ("train.liger=true", "train.liger: true, but no CUDA device"),
        ("train.compile=true", "train.compile: true needs a CUDA device"),
    ],
)
def test_what_cannot_run_on_this_machine_fails_validation(override, expected, monkeypatch):
    from tuneforge.config import environment

    monkeypatch.setattr(environment, "cpu_bf16", lambda: False)  # a CPU without bf16 units
    assert expected in config_error({}, [override])
    # the machine-independent check (compare's saved configs) still accepts it
    validate_config(apply_overrides({}, [override]))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU answer")
def test_bf16_on_a_cpu_with_bf16_units_autocasts(monkeypatch):
    from tuneforge.config import environment
    from tuneforge.training.arguments import precision_flags

    monkeypatch.setattr(environment, "cpu_bf16", lambda: True)
    assert precision_flags("bf16") == {"bf16": True, "fp16": False, "use_cpu": True}
    assert precision_flags("auto")["bf16"] is False  # a model of unknown width stays fp32


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU answer")
@pytest.mark.parametrize("units", [True, False])
def test_auto_precision_on_a_cpu_follows_its_bf16_units_and_the_model_width(units, monkeypatch):
    from transformers import BertConfig

    from tuneforge.config import environment
    from tuneforge.config.environment import AUTO_CPU_BF16_MIN_WIDTH, model_width, precision_note, resolve_precision

    monkeypatch.setattr(environment, "cpu_bf16", lambda: units)
    wide, narrow = BertConfig(hidden_size=AUTO_CPU_BF16_MIN_WIDTH), BertConfig(hidden_size=32)
    assert model_width(wide) == AUTO_CPU_BF16_MIN_WIDTH and model_width(object()) is None
    assert resolve_precision("auto", model_width(wide)) == ("bf16" if units else "fp32")
    assert resolve_precision("auto", model_width(narrow)) == "fp32"
    assert resolve_precision("auto", None) == "fp32"
    assert resolve_precision("fp32", model_width(wide)) == "fp32"
    note = precision_note("auto", resolve_precision("auto", 384), 384)
    if units:
        assert note.startswith("precision bf16 autocast on CPU") and "384 wide" in note and "fp32 turns it off" in note
        assert "32 wide, under 256" in precision_note("auto", "fp32", 32)
    else:
        assert note == "precision fp32 (auto: this CPU has no bf16 units)"


def test_uninstalled_tracker_and_optimizer_fail_validation(monkeypatch):
    from tuneforge.config import environment

    real = environment.installed
    monkeypatch.setattr(
        environment, "installed", lambda name: False if name in ("mlflow", "bitsandbytes") else real(name)
    )
    assert "train.report_to: 'mlflow' is not installed" in config_error({}, ["train.report_to=mlflow"])
    assert "train.optimizer: 'adamw_8bit' needs bitsandbytes" in config_error({}, ["train.optimizer=adamw_8bit"])


def test_sizes_that_would_only_allocate_memory_are_refused():
    assert "method.bottleneck_size: 10000000000 is larger than 65536" in config_error(
        {"method": {"name": "adapter", "bottleneck_size": 10**10}}
    )
    assert "method.projection_hidden_size" in config_error(
        {"method": {"name": "prefix", "projection_hidden_size": 10**9}}
    )
    assert load_config(raw={"method": {"name": "adapter", "bottleneck_size": 64}}).method.bottleneck_size == 64


def test_config_file_name_becomes_a_plain_run_name(tmp_path):
    p = tmp_path / ("x" * 150 + ".yaml")
    p.write_text("{}\n")
    assert load_config(p).output.name == "x" * 100


def test_text_pair_column_must_be_another_column():
    """The same column as text and text pair used to pass validation and fail in training with pandas' "DataFrame
    columns must be unique for orient='records'"; it is a config error naming both keys."""
    with pytest.raises(ConfigError) as exc:
        load_config(raw={"data": {"text_column": "review", "text_pair_column": "review"}})
    assert "data.text_pair_column: 'review' is also data.text_column" in str(exc.value)
    assert load_config(raw={"data": {"text_pair_column": "hypothesis"}}).data.text_pair_column == "hypothesis"
