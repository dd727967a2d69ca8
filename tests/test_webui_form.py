"""The web UI's schema-generated Train form (tuneforge.webui.form): every config key has a field, shipped configs
survive the form unchanged, and widget values convert exactly. No gradio needed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tuneforge.config.schema import DataSection, RunConfig
from tuneforge.config.validation import DEFAULT_METHOD, DEFAULT_TASK, validate_config
from tuneforge.config.yaml_reader import read_yaml
from tuneforge.registry import METHODS, TASKS
from tuneforge.webui import fields, form
from tuneforge.webui.fields import FieldSpec, all_fields, fields_for, method_names, task_types
from tuneforge.webui.form import form_to_raw, form_values, from_widget, to_widget, to_yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
#: the shipped run configs (configs/search/ holds search spaces, not run configs)
RUN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("**/*.yaml") if not p.is_relative_to(ROOT / "configs/search"))


def _spec(key: str, group: str | None = None) -> FieldSpec:
    matches = [s for s in all_fields() if s.key == key and (group is None or s.group == group)]
    assert matches, f"no field {key} ({group})"
    return matches[0]


# --- 1. every schema key has a form field ------------------------------------------------------------------------


def _leaves(model: type[BaseModel], prefix: str, skip=()) -> list[str]:
    """Leaf key paths of a section, walked independently of fields.py: sub-sections are recursed into, anything else
    (named-section mappings such as task.tasks included) is one key."""
    keys = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _leaves(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _expected() -> set[tuple[str, str]]:
    expected = set()
    for section in ("model", "data", "train", "distill", "eval", "output"):
        cls = DataSection if section == "data" else RunConfig.model_fields[section].annotation
        expected |= {(section, k) for k in _leaves(cls, section + ".")}
    for name in TASKS.names():
        task = TASKS.get(name)
        expected |= {(f"task:{name}", k) for k in _leaves(task.Config, "task.", skip=("type",))}
        expected |= {(f"data:{name}", k) for k in _leaves(task.DataConfig, "data.", skip=DataSection.model_fields)}
    for name in METHODS.names():
        expected |= {(f"method:{name}", k) for k in _leaves(METHODS.get(name).Config, "method.", skip=("name",))}
    return expected


def test_every_schema_key_has_a_form_field():
    specs = all_fields()
    got = [(s.group, s.key) for s in specs]
    assert len(got) == len(set(got)), "a (group, key) appears twice"
    expected = _expected()
    assert expected - set(got) == set(), "config keys without a form field"
    assert set(got) - expected == set(), "form fields that are not config keys"
    for s in specs:
        assert s.description.strip(), f"{s.key} has no description"
        assert s.kind in fields.KINDS
        assert (s.kind == "choice") == bool(s.choices), s.key
    # the task's named sub-task sections are one YAML field, required
    tasks = _spec("task.tasks", "task:multitask")
    assert (tasks.kind, tasks.required, tasks.default) == ("yaml", True, None)
    assert task_types() == TASKS.names() and method_names() == METHODS.names()


def test_fields_for_has_the_groups_of_one_task_and_method():
    specs = fields_for("classification", "lora")
    groups = {s.group for s in specs}
    assert groups == {
        "model",
        "data",
        "train",
        "distill",
        "eval",
        "output",
        "task:classification",
        "data:classification",
        "method:lora",
    }
    keys = [s.key for s in specs]
    assert len(keys) == len(set(keys))
    by_key = {s.key: s for s in specs}
    assert by_key["data.split.validation"].group == "data"
    assert by_key["train.early_stopping.patience"].group == "train"
    assert by_key["data.clean.dedup"].group == "data:classification"
    assert by_key["data.augment.back_translation.num_beams"].group == "data:classification"
    assert "task.type" not in by_key and "method.name" not in by_key
    with pytest.raises(ValueError, match="unknown task"):
        fields_for("nope", "lora")


def test_kinds_defaults_and_choices():
    assert _spec("train.compile").kind == "choice" and _spec("train.compile").choices == ("auto", "true", "false")
    assert _spec("model.keep_layers").kind == "yaml" and _spec("model.keep_layers").optional
    assert _spec("train.epochs").kind == "float" and _spec("train.epochs").default == 3.0
    assert _spec("train.batch_size").kind == "int" and not _spec("train.batch_size").optional
    assert _spec("train.max_steps").kind == "int" and _spec("train.max_steps").optional
    assert _spec("model.name").kind == "text" and _spec("model.revision").optional
    assert _spec("model.trust_remote_code").kind == "bool"
    assert _spec("data.augment.ops").default == ["synonym", "insert", "swap", "delete"]  # default_factory called
    assert _spec("data.balance.class_weights").kind == "yaml"
    quant = _spec("method.quantization", "method:qlora")
    assert (quant.kind, quant.choices, quant.default, quant.optional) == ("choice", ("nf4", "fp4", "int8"), "nf4", True)
    assert not any(s.required for s in all_fields() if s.key != "task.tasks")


def test_no_gradio_or_torch_import():
    """fields.py and form.py themselves import neither (the registries' members may import torch; that is theirs)."""
    for module in (fields, form):
        source = Path(module.__file__).read_text()
        assert "import gradio" not in source and "import torch" not in source and "from torch" not in source


# --- 2. shipped configs survive the form -------------------------------------------------------------------------


def _typed(value):
    """`value` with the type of every scalar made part of it: 1 and 1.0 and True differ."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def _order(value):
    """The key order of every mapping, recursively."""
    if isinstance(value, dict):
        return [(k, _order(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_order(v) for v in value]
    return None


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_config_round_trip(path):
    raw = read_yaml(path)
    t, m, values = form_values(raw)
    assert (t, m) == (raw["task"]["type"], raw["method"]["name"])
    out = form_to_raw(t, m, values, base=raw)
    assert _typed(out) == _typed(raw)
    canonical = [s for s in form.SECTION_ORDER if s in raw] + [s for s in raw if s not in form.SECTION_ORDER]
    assert list(out) == canonical
    assert [_order(out[s]) for s in canonical] == [_order(raw[s]) for s in canonical]  # keys in base's order
    assert yaml.safe_load(to_yaml(out)) == raw
    # a UI's number widgets give floats (gradio's Number): the config still comes back as written
    floats = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in values.items()}
    assert _typed(form_to_raw(t, m, floats, base=raw)) == _typed(raw)
    # without the base only values that differ from the defaults are written; the config it gives is the same
    fresh = form_to_raw(t, m, values)
    assert validate_config(copy.deepcopy(fresh)).model_dump() == validate_config(copy.deepcopy(raw)).model_dump()
    assert form_to_raw(t, m, form_values(fresh)[2]) == fresh


def test_round_trip_found_configs():
    assert len(RUN_CONFIGS) >= 20 and not any("search" in p.parts for p in RUN_CONFIGS)


# --- 3. widget conversions ---------------------------------------------------------------------------------------


def test_choice_with_bool():
    spec = _spec("train.compile")
    assert [to_widget(spec, v) for v in ("auto", True, False)] == ["auto", "true", "false"]
    assert [from_widget(spec, w) for w in ("auto", "true", "false")] == ["auto", True, False]
    assert from_widget(spec, True) is True
    with pytest.raises(ValueError, match="train.compile"):
        from_widget(spec, "sometimes")
    plain = _spec("train.eval_strategy")  # a Literal without bool: the word stays a word
    assert from_widget(plain, "no") == "no"
    assert to_widget(plain, False) == "no"  # `eval_strategy: no` read by YAML 1.1


def test_optional_choice():
    spec = _spec("method.quantization", "method:lora")
    assert to_widget(spec, None) == "" and from_widget(spec, "") is None
    assert from_widget(spec, "nf4") == "nf4"


def test_yaml_fields():
    spec = _spec("model.keep_layers")
    assert to_widget(spec, [0, 2, 4]) == "[0, 2, 4]" and from_widget(spec, "[0, 2, 4]") == [0, 2, 4]
    assert to_widget(spec, 3) == "3" and from_widget(spec, "3") == 3
    assert to_widget(spec, None) == "" and from_widget(spec, "") is None
    with pytest.raises(ValueError, match="model.keep_layers"):
        from_widget(spec, "[0, 2")
    weights = _spec("data.balance.class_weights", "data:classification")
    assert to_widget(weights, {"a": 2.0}) == "{a: 2.0}" and from_widget(weights, "{a: 2.0}") == {"a": 2.0}
    assert to_widget(weights, "balanced") == "balanced" and from_widget(weights, "balanced") == "balanced"
    variables = _spec("data.variables", "data:causal_lm")
    text = to_widget(variables, {"a": "two\nlines", "b": "ü"})
    assert "\n" not in text and from_widget(variables, text) == {"a": "two\nlines", "b": "ü"}


def test_numbers():
    max_steps = _spec("train.max_steps")  # Optional[int]
    assert from_widget(max_steps, "") is None and from_widget(max_steps, None) is None
    assert to_widget(max_steps, None) is None
    batch = _spec("train.batch_size")
    assert from_widget(batch, 3.0) == 3 and type(from_widget(batch, 3.0)) is int
    assert from_widget(batch, "16") == 16
    with pytest.raises(ValueError, match=r"^train\.batch_size: .*abc"):
        from_widget(batch, "abc")
    for bad in (3.5, True, "", float("nan")):
        with pytest.raises(ValueError, match="train.batch_size"):
            from_widget(batch, bad)
    lr = _spec("train.learning_rate")
    assert to_widget(lr, 3e-4) == 3e-4 and from_widget(lr, 3e-4) == 3e-4 and type(from_widget(lr, 3e-4)) is float
    assert from_widget(lr, "3e-4") == 3e-4
    assert to_widget(lr, "3e-4") == 3e-4  # YAML 1.1 reads 3e-4 as a string; pydantic takes it as the number
    raw = form_to_raw("classification", "lora", {"train.learning_rate": 3e-4})
    assert type(raw["train"]["learning_rate"]) is float and raw["train"]["learning_rate"] == 3e-4


def test_text_and_bool():
    revision = _spec("model.revision")
    assert to_widget(revision, None) == "" and from_widget(revision, "") is None and from_widget(revision, "v1") == "v1"
    name = _spec("model.name")
    assert from_widget(name, "") == ""  # not nullable: an empty text stays text (validation judges it)
    flag = _spec("model.trust_remote_code")
    assert to_widget(flag, True) is True and from_widget(flag, False) is False
    with pytest.raises(ValueError, match="model.trust_remote_code"):
        from_widget(flag, "maybe")


# --- 4. form_to_raw and form_values ------------------------------------------------------------------------------


def test_form_to_raw_keeps_unknown_keys_and_writes_changes():
    base = {
        "model": {"name": "builtin:minilm-l6", "mystery": 1},
        "task": {"type": "classification"},
        "method": {"name": "lora", "r": 8},
        "extra": {"x": [1, 2]},
        "data": {"format": "messages"},
    }  # a causal_lm key under a classification task
    t, m, values = form_values(base)
    values["method.r"] = 16
    values["train.epochs"] = 1.5
    out = form_to_raw(t, m, values, base=base)
    assert out["model"] == {"name": "builtin:minilm-l6", "mystery": 1}
    assert out["extra"] == {"x": [1, 2]} and out["data"] == {"format": "messages"}
    assert out["method"] == {"name": "lora", "r": 16}
    assert out["train"] == {"epochs": 1.5}
    assert list(out) == ["model", "data", "task", "method", "train", "extra"]
    assert base["method"]["r"] == 8  # base is not changed


def test_form_to_raw_without_base_writes_only_changes():
    t, m, values = form_values({})
    assert (t, m) == (DEFAULT_TASK, DEFAULT_METHOD)
    assert form_to_raw(t, m, values) == {"task": {"type": t}, "method": {"name": m}}
    values["data.split.test"] = 0.0
    values["train.early_stopping.patience"] = 2
    values["model.keep_layers"] = "[0, 2, 4]"
    out = form_to_raw(t, m, values)
    assert out == {
        "model": {"keep_layers": [0, 2, 4]},
        "data": {"split": {"test": 0.0}},
        "task": {"type": t},
        "method": {"name": m},
        "train": {"early_stopping": {"patience": 2}},
    }
    assert validate_config(out).data.split.test == 0.0
    with pytest.raises(ValueError, match="train.batch_size"):
        form_to_raw(t, m, {**values, "train.batch_size": "abc"})


def test_switching_task_and_method():
    """Keys of the previous task/method stay in base (validation decides), the new ones come from the form."""
    base = read_yaml(ROOT / "configs/quickstart/sentiment-minilm-lora.yaml")
    _, _, values = form_values({"task": {"type": "causal_lm"}, "method": {"name": "full"}})
    values["data.format"] = "messages"
    out = form_to_raw("causal_lm", "full", values, base=base)
    assert out["task"] == {"type": "causal_lm"}
    assert out["method"] == {"name": "full", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"}
    assert out["data"]["label_column"] == "label" and out["data"]["format"] == "messages"


def test_form_values_defaults_and_required():
    t, m, values = form_values({"task": {"type": "multitask"}, "eval": None})
    assert t == "multitask" and values["task.tasks"] == "" and values["train.batch_size"] == 32
    assert "data.augment.ops" not in values  # a classification-only key
    out = form_to_raw(t, m, values)
    assert "tasks" not in out["task"]  # an empty required field is left out: validation names it
    values["task.tasks"] = "{polarity: {label_column: label}}"
    assert form_to_raw(t, m, values)["task"]["tasks"] == {"polarity": {"label_column": "label"}}
    with pytest.raises(ValueError, match="unknown method"):
        form_values({"method": {"name": "nope"}})
