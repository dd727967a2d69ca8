"""Image runs in the rest of the product: distillation (a CNN teacher for a ViT student), the memory estimate, `data
inspect`, `compare`, the web UI's Predict page with uploaded images, and the task's own hooks (merge check inputs,
ONNX inputs, the TensorFlow BatchNorm momentum fix, the ViT image-size refusal)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from image_common import CLASSES, make_image_folder, make_tiny_resnet, make_tiny_vit

pytestmark = pytest.mark.integration


def _cfg(model: str, data: str, out: Path, **extra) -> dict:
    cfg = {
        "model": {"name": model},
        "task": {"type": "image_classification"},
        "data": {"train": data, "split": {"validation": 0.2, "test": 0.2}},
        "method": {"name": "full"},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 0.01, "report_to": "none", "logging_steps": 2},
        "output": {"dir": str(out)},
    }
    for key, value in extra.items():
        section, name = key.split("__", 1)
        cfg.setdefault(section, {})[name] = value
    return cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import tuneforge
    from tuneforge.config import validate_config

    d = tmp_path_factory.mktemp("images")
    data = str(make_image_folder(d / "data"))
    resnet, vit = make_tiny_resnet(d / "resnet"), make_tiny_vit(d / "vit")
    teacher = d / "runs" / "teacher"
    tuneforge.train(validate_config(_cfg(resnet, data, teacher)))
    return {"dir": d, "data": data, "resnet": resnet, "vit": vit, "teacher": teacher}


def test_distillation_cnn_teacher_vit_student(world):
    import tuneforge
    from tuneforge.config import validate_config

    out = world["dir"] / "runs" / "student"
    cfg = _cfg(
        world["vit"],
        world["data"],
        out,
        data__cutmix={"alpha": 1.0, "prob": 0.5},
        distill__teacher=str(world["teacher"]),
        distill__alpha=0.7,
        train__learning_rate=0.003,
    )
    result = tuneforge.train(validate_config(cfg))
    block = result.metrics["distill"]
    assert block["teacher"]["accuracy"] >= 0.8  # the teacher learned the easy classes
    assert 0.0 <= block["agreement_with_teacher"] <= 1.0
    assert block["teacher"]["parameters"] != block["student"]["parameters"]
    assert "Teacher and student" in (out / "eval" / "report.md").read_text()
    assert json.loads((out / "eval" / "metrics.json").read_text())["distill"]["split"] == "test"


def test_distillation_refuses_a_teacher_with_other_classes(world, tmp_path):
    import tuneforge
    from tuneforge.config import validate_config
    from tuneforge.errors import DataError

    other = make_image_folder(tmp_path / "other", per_class=8, classes=("a", "b", "c"))
    cfg = _cfg(world["vit"], str(other), tmp_path / "run", distill__teacher=str(world["teacher"]))
    with pytest.raises(DataError, match="differ from the data"):
        tuneforge.train(validate_config(cfg))


def test_estimate_measures_image_activations(world):
    from tuneforge.config import validate_config
    from tuneforge.training.estimate import estimate_memory

    small = estimate_memory(validate_config(_cfg(world["resnet"], world["data"], world["dir"] / "x")), device="cpu")
    big = estimate_memory(
        validate_config(_cfg(world["resnet"], world["data"], world["dir"] / "x", data__image_size=64)), device="cpu"
    )
    assert any("image model" in a for a in small.assumptions)
    # activations grow with the pixels: 4x the pixels, about 4x the activations
    assert 3.0 < big.activations / small.activations < 4.5
    assert small.weights == big.weights > 0


def test_data_inspect_writes_the_image_report(world, tmp_path, write_yaml):
    from conftest import run_cli

    cfg = write_yaml(_cfg(world["resnet"], world["data"], tmp_path / "run"))
    r = run_cli("data", "inspect", cfg, "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr[-600:]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| circle |" in report and (tmp_path / "report" / "train_samples.png").is_file()


def test_webui_predict_page_takes_uploaded_images(world):
    pytest.importorskip("gradio")
    from tuneforge.webui.model_pages import ModelCache, predict_rows
    from tuneforge.webui.workspace import Workspace

    ws = Workspace(world["dir"] / "runs", [world["dir"]], cwd=world["dir"])
    files = [str(Path(world["data"]) / c / "00.png") for c in CLASSES]
    table, bars = predict_rows(ws, ModelCache(), "teacher", "", "en", files)
    assert len(table) == 3 and list(table.iloc[:, 0]) == ["00.png"] * 3
    assert set(table.iloc[:, 1]) <= set(CLASSES) and len(bars) == 3 * len(CLASSES)
    # the Export page's serve snippet shows how to send an image to an image run
    from tuneforge.training.runlist import input_kind
    from tuneforge.webui.export_page import snippet

    kind = input_kind(world["teacher"])
    assert kind == "image" and "-F file=@" in snippet("http://h", "classify", "teacher", kind)


def test_task_hooks_for_merge_and_onnx(world):
    from tuneforge.data.images import Preprocessing
    from tuneforge.errors import ConfigError
    from tuneforge.tasks.image_classification import ImageClassificationTask as T

    prep = Preprocessing.from_dir(world["resnet"])
    inputs = T.exports.check_inputs(prep, {})
    assert len(inputs) == 4 and all(x["pixel_values"].shape == (1, 3, 32, 32) for x in inputs)
    with pytest.raises(ConfigError, match="--text"):
        T.exports.check_inputs(prep, {}, ["a text"])
    names, args, shapes = T.exports.onnx_inputs(prep)
    assert names == ["pixel_values"] and args[0].shape[1:] == (3, 32, 32) and 0 in shapes[0]


def test_prepare_model_fixes_tensorflow_batchnorm_momentum_and_refuses_vit_resizing(world, tmp_path):
    import torch
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    from tuneforge.config import validate_config
    from tuneforge.errors import ConfigError
    from tuneforge.tasks.image_classification import ImageClassificationTask as T

    m = MobileNetV2ForImageClassification(MobileNetV2Config(depth_multiplier=0.35, image_size=32, num_labels=3))
    assert any(b.momentum > 0.5 for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))
    task = T(validate_config(_cfg(world["resnet"], world["data"], tmp_path / "r")))
    task.prepare_model(m)
    assert all(b.momentum == 0.1 for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))

    from transformers import AutoModelForImageClassification

    vit = AutoModelForImageClassification.from_pretrained(world["vit"])
    task = T(validate_config(_cfg(world["vit"], world["data"], tmp_path / "r", data__image_size=24)))
    with pytest.raises(ConfigError, match="data.image_size"):
        task.prepare_model(vit)


@pytest.mark.parametrize(
    "method",
    [
        {"name": "adapter"},
        {"name": "ia3", "target_modules": ["k_proj", "v_proj", "fc2"], "feedforward_modules": ["fc2"]},
    ],
)
def test_vision_transformer_takes_adapters_and_ia3(world, tmp_path, method):
    import tuneforge
    from tuneforge.config import validate_config
    from tuneforge.inference import predict

    cfg = _cfg(world["vit"], world["data"], tmp_path / "run", train__epochs=1)
    cfg["method"] = method
    result = tuneforge.train(validate_config(cfg))
    eff = result.efficiency
    assert 0 < eff["trainable_params"] < eff["total_params"] / 2
    rows = predict(result.run_dir, [str(Path(world["data"]) / "circle" / "01.png")])
    assert rows[0]["label"] in CLASSES


def test_ia3_without_targets_names_the_key(world, tmp_path):
    import tuneforge
    from tuneforge.config import validate_config
    from tuneforge.errors import TuneforgeError

    cfg = _cfg(world["vit"], world["data"], tmp_path / "run", train__epochs=1)
    cfg["method"] = {"name": "ia3"}
    with pytest.raises(TuneforgeError, match="method.target_modules") as e:
        tuneforge.train(validate_config(cfg))
    assert "\n" not in str(e.value)


def test_compare_image_methods(world, tmp_path, write_yaml):
    from conftest import run_cli

    cfg = write_yaml(_cfg(world["resnet"], world["data"], tmp_path / "run"))
    out = tmp_path / "cmp"
    r = run_cli("compare", cfg, "-m", "full,lora", "--max-steps", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr[-800:]
    result = json.loads((out / "compare.json").read_text())
    text = json.dumps(result)
    assert "lora" in text and "full" in text and "accuracy" in text
    assert (out / "report.md").is_file()
