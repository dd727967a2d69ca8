"""The task contract reaches a run's whole life: a new task is one module (here a subclass registered in the
test) and predict, serve and export work for it without touching inference/serve/export; those packages name
no task; the exact split is saved with the run and reused by `eval` and `export` (no cleaning re-run); each
task owns its data keys."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Literal

import pytest

import tuneforge
from tuneforge.config import load_config
from tuneforge.errors import ConfigError
from tuneforge.registry import TASKS

from conftest import tiny_config

SRC = Path(__file__).resolve().parents[1] / "src" / "tuneforge"


@pytest.mark.unit
@pytest.mark.parametrize("package", ["inference", "serve", "export", "generation.py", "training"])
def test_no_task_is_named_outside_tasks(package):
    """No string in these packages is the name of a registered task (they ask the task through its contract)."""
    names = set(TASKS.names())
    path = SRC / package
    found = []
    for f in [path] if path.is_file() else sorted(path.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{f.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, found


@pytest.mark.unit
def test_no_capability_is_probed_with_hasattr():
    offenders = []
    for f in sorted(SRC.rglob("*.py")):
        if f.parts[-2] in ("tasks", "methods"):  # a task or method may ask about its own model
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "hasattr"
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in ("prepare_frames", "disable_adapter", "held_out", "predict")
            ):
                offenders.append(f"{f.relative_to(SRC)}:{node.lineno}")
    assert not offenders, offenders


@pytest.fixture(scope="module")
def toy_task():
    """A task added as one module: a classifier with its own name, config and data keys."""
    from tuneforge.tasks.classification import ClassificationConfig, ClassificationData, ClassificationTask

    class ToyData(ClassificationData):
        lowercase: bool = False

    class ToyConfig(ClassificationConfig):
        type: Literal["toy_cls"] = "toy_cls"

    @TASKS.register("toy_cls")
    class ToyTask(ClassificationTask):
        name = "toy_cls"
        Config = ToyConfig
        DataConfig = ToyData

    yield ToyTask
    TASKS.unregister("toy_cls")  # later tests (the generated config reference) see the built-in tasks only


@pytest.fixture(scope="module")
def toy_run(tiny_bert, toy_task, tmp_path_factory):
    import pandas as pd

    from conftest import make_sentiment_rows

    tmp = tmp_path_factory.mktemp("toy")
    data = tmp / "d.csv"
    pd.DataFrame(make_sentiment_rows(80)).to_csv(data, index=False)
    raw = tiny_config(tiny_bert, str(data), str(tmp / "run"))
    raw["task"] = {"type": "toy_cls"}
    raw["data"]["lowercase"] = True
    raw["data"]["clean"] = {"label_noise": "none"}
    raw["train"].update({"max_steps": 3, "epochs": 1})
    return tuneforge.train(load_config(raw=raw)).run_dir


@pytest.mark.integration
def test_a_new_task_predicts_serves_and_exports_through_the_contract(toy_run, tmp_path):
    from fastapi.testclient import TestClient

    from tuneforge.export.exporter import export_run
    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import load_backend

    rows = tuneforge.predict(toy_run, ["a good film", "a bad film"])
    assert {r["label"] for r in rows} <= {"negative", "positive"}
    with TestClient(create_app(load_backend(str(toy_run), device="cpu"))) as c:
        assert c.get("/health").json()["task"] == "toy_cls"
        r = c.post("/v1/classify", json={"texts": ["a good film"]})
        assert r.status_code == 200 and r.json()["results"][0]["label"] == rows[0]["label"]
    report = export_run(toy_run, "onnx-int8", tmp_path / "exp", bench=False, max_samples=8)
    assert report["parity"]["split"] == "test" and 0.0 <= report["parity"]["label_agreement"] <= 1.0
    assert (toy_run / "config.yaml").read_text().count("lowercase: true") == 1


@pytest.mark.integration
def test_the_exact_split_is_saved_and_reused_without_cleaning(toy_run, tmp_path, monkeypatch):
    """eval and export read the saved test split: cleaning (which may train models) is not run again."""
    import pandas as pd

    import tuneforge.data.prepare as prepare
    from tuneforge.export.exporter import export_run

    split = toy_run / "data" / "split"
    manifest = json.loads((split / "split.json").read_text())
    test = pd.read_json(split / "test.jsonl", lines=True)
    assert len(test) == manifest["sizes"]["test"] > 0 and set(test.columns) == {"text", "label"}
    source = pd.read_csv(manifest["source"])
    train_ids = manifest["train_ids"]
    # the training ids are distinct source rows, and the held-out rows are exactly the others
    from collections import Counter

    assert len(set(train_ids)) == len(train_ids) and all(0 <= i < len(source) for i in train_ids)
    assert len(train_ids) + manifest["sizes"]["validation"] + manifest["sizes"]["test"] == len(source)
    rest = Counter(source["text"]) - Counter(source.iloc[train_ids]["text"])
    assert not Counter(test["text"]) - rest

    def boom(*a, **k):
        raise AssertionError("cleaning ran again")

    monkeypatch.setattr(prepare, "improve_training_data", boom)
    metrics = tuneforge.evaluate(toy_run)  # no --data: the run's own test split
    trained = json.loads((toy_run / "eval" / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-9)
    assert (toy_run / "eval" / "test-split" / "metrics.json").is_file()
    report = export_run(toy_run, "merged", tmp_path / "m", bench=False, max_samples=100)
    assert report["parity"]["rows"] == len(test)
    assert report["parity"]["reference_accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)


@pytest.mark.unit
def test_each_task_owns_its_data_keys(tiny_bert):
    cfg = load_config(raw={"model": {"name": tiny_bert}})
    assert "packing" not in cfg.data.model_dump() and "clean" in cfg.data.model_dump()
    sft = load_config(raw={"model": {"name": tiny_bert}, "task": {"type": "causal_lm"}, "data": {"packing": True}})
    assert sft.data.packing is True and "clean" not in sft.data.model_dump()
    # a config saved before the split spelled out every task's keys: the other task's keys at their defaults pass
    old = load_config(
        raw={
            "model": {"name": tiny_bert},
            "data": {"format": "auto", "packing": False, "roles": {}, "variables": {}, "template": "auto"},
        }
    )
    assert not hasattr(old.data, "packing")
    with pytest.raises(ConfigError, match=r"data\.packing: only used by the causal_lm task"):
        load_config(raw={"model": {"name": tiny_bert}, "data": {"packing": True}})
    with pytest.raises(ConfigError, match=r"data\.clean: only used by the classification"):
        load_config(raw={"task": {"type": "causal_lm"}, "data": {"clean": {"dedup": "none"}}})
    with pytest.raises(ConfigError, match=r"data\.lable_column: unknown key \(did you mean 'label_column'\?\)"):
        load_config(raw={"data": {"lable_column": "y"}})
