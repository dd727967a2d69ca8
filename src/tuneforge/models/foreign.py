"""Checkpoints saved by torchvision or timm, used without those libraries.

`model.name` may be a PyTorch checkpoint file (`.pth`, `.pt`, `.bin`, `.ckpt`, `.safetensors`: a state dict, possibly
inside `{"state_dict": ...}` / `{"model": ...}` and with DDP's `module.` prefix) or a timm model directory (its
config.json names an `architecture` and has no `model_type`, as timm saves to the hub). Two families are read from
their weights alone and converted, once, into a transformers directory in the cache (so every method, export and
serve path sees a model it knows):

- ResNet (torchvision `resnet18/34/50/101/152` and timm's plain `resnet*`, which share the key names): any depths and
  widths with the 7x7 stem, basic or bottleneck blocks (stride in the 3x3 convolution) ->
  `ResNetForImageClassification`.
- MobileNetV2 (torchvision's layout, width 1.0) -> `MobileNetV2ForImageClassification`.

Other timm architectures load through transformers' `TimmWrapper` when timm is installed, and are one clear error
otherwise; other checkpoint layouts are one clear error naming what was found. The input preprocessing comes from
timm's `pretrained_cfg` (input size, crop fraction, interpolation, mean/std), or ImageNet's for a bare file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import torch

from tuneforge.errors import ModelError, first_line

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
#: state-dict files a timm directory may hold, in the order they are looked for
TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def is_checkpoint_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES


def timm_config(path: Path) -> dict | None:
    """The config.json of a timm model directory (an `architecture`, no `model_type`); None for anything else."""
    file = path / "config.json"
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(cfg, dict) and "model_type" not in cfg and isinstance(cfg.get("architecture"), str):
        return cfg
    return None


def load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from a training checkpoint's `state_dict`/`model` entry and
    DDP's `module.` prefix."""
    try:
        if file.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors have no common base
        raise ModelError(f"{file}: cannot be read as a PyTorch checkpoint: {first_line(exc)}") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(
            f"{file}: holds no state dict of tensors (a whole pickled model cannot be read safely; "
            f"save model.state_dict() instead)"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


# ---------------------------------------------------------------------------------------------------------------
# ResNet


def _bn(src: str, dst: str) -> dict[str, str]:
    return {
        f"{src}.{k}": f"{dst}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }


def resnet_config(state: dict[str, torch.Tensor], where: str):
    """A transformers ResNetConfig with the depths and widths the state dict holds, or a ModelError saying why it
    is not a plain ResNet."""
    from transformers import ResNetConfig

    stem = state.get("conv1.weight")
    if stem is None or stem.ndim != 4 or tuple(stem.shape[2:]) != (7, 7):
        raise ModelError(
            f"{where}: not a plain ResNet (no 7x7 `conv1` stem; deep-stem variants such as resnet50d need timm)"
        )
    bottleneck = "layer1.0.conv3.weight" in state
    depths, widths = [], []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in state for m in [re.match(rf"layer{stage}\.(\d+)\.conv1\.weight$", k)] if m}
        if not blocks:
            break
        if blocks != set(range(len(blocks))):
            raise ModelError(
                f"{where}: ResNet stage layer{stage} has blocks {sorted(blocks)}, not 0..{len(blocks) - 1}"
            )
        depths.append(len(blocks))
        out = state[f"layer{stage}.0.{'conv3' if bottleneck else 'conv2'}.weight"]
        widths.append(int(out.shape[0]))
        if bottleneck:
            mid = state[f"layer{stage}.0.conv2.weight"]
            if int(mid.shape[0]) * 4 != int(out.shape[0]) or int(mid.shape[1]) != int(mid.shape[0]):
                raise ModelError(
                    f"{where}: a wide or grouped (ResNeXt) bottleneck in layer{stage} "
                    f"({int(mid.shape[0])} -> {int(out.shape[0])} channels); only plain ResNets convert "
                    f"without timm"
                )
    if len(depths) < 1:
        raise ModelError(f"{where}: not a ResNet (no layer1 blocks)")
    head = state.get("fc.weight")
    return ResNetConfig(
        num_channels=int(stem.shape[1]),
        embedding_size=int(stem.shape[0]),
        hidden_sizes=widths,
        depths=depths,
        layer_type="bottleneck" if bottleneck else "basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
        num_labels=int(head.shape[0]) if head is not None else 1000,
    )


def resnet_key_map(config) -> dict[str, str]:
    """torchvision/timm ResNet keys -> transformers ResNetForImageClassification keys, for `config`."""
    m = {
        "conv1.weight": "resnet.embedder.embedder.convolution.weight",
        **_bn("bn1", "resnet.embedder.embedder.normalization"),
    }
    convs = 3 if config.layer_type == "bottleneck" else 2
    in_ch = config.embedding_size
    for s, (depth, width) in enumerate(zip(config.depths, config.hidden_sizes)):
        for b in range(depth):
            src, dst = f"layer{s + 1}.{b}", f"resnet.encoder.stages.{s}.layers.{b}"
            for c in range(convs):
                m[f"{src}.conv{c + 1}.weight"] = f"{dst}.layer.{c}.convolution.weight"
                m |= _bn(f"{src}.bn{c + 1}", f"{dst}.layer.{c}.normalization")
            if b == 0 and (in_ch != width or s > 0):  # transformers adds a projection exactly where torchvision does
                m[f"{src}.downsample.0.weight"] = f"{dst}.shortcut.convolution.weight"
                m |= _bn(f"{src}.downsample.1", f"{dst}.shortcut.normalization")
        in_ch = width
    m |= {"fc.weight": "classifier.1.weight", "fc.bias": "classifier.1.bias"}
    return m


def is_resnet(state: dict) -> bool:
    return "layer1.0.conv1.weight" in state


def is_torchvision_mobilenet_v2(state: dict) -> bool:
    return "features.0.0.weight" in state and "features.18.0.weight" in state


def _remap_strict(state: dict, key_map: dict[str, str], where: str, optional=("fc.weight", "fc.bias")) -> dict:
    unknown = sorted(set(state) - set(key_map))
    absent = sorted(set(key_map) - set(state) - set(optional))
    if unknown or absent:
        what = "unknown keys " + ", ".join(unknown[:3]) if unknown else "missing keys " + ", ".join(absent[:3])
        raise ModelError(
            f"{where}: not a layout tuneforge converts ({what}{' ...' if len(unknown or absent) > 3 else ''})"
        )
    return {key_map[k]: v for k, v in state.items()}


def build_model(state: dict[str, torch.Tensor], where: str):
    """A transformers image classifier holding `state` (a torchvision/timm ResNet or torchvision MobileNetV2)."""
    if is_resnet(state):
        from transformers import ResNetForImageClassification

        config = resnet_config(state, where)
        model = ResNetForImageClassification(config)
        mapped = _remap_strict(state, resnet_key_map(config), where)
    elif is_torchvision_mobilenet_v2(state):
        from transformers import MobileNetV2ForImageClassification

        from tuneforge.models.vision import mobilenet_v2_config, mobilenet_v2_key_map

        head = state.get("classifier.1.weight")
        model = MobileNetV2ForImageClassification(mobilenet_v2_config(int(head.shape[0]) if head is not None else 1000))
        mapped = _remap_strict(
            state, mobilenet_v2_key_map(), where, optional=("classifier.1.weight", "classifier.1.bias")
        )
    else:
        sample = ", ".join(list(state)[:3])
        raise ModelError(
            f"{where}: not a ResNet or MobileNetV2 state dict (first keys: {sample}); other "
            f"architectures need a transformers model directory, or timm for timm checkpoints"
        )
    try:
        missing, _ = model.load_state_dict(mapped, strict=False)
    except RuntimeError as exc:  # a shape that the inferred config does not have (e.g. a MobileNetV2 of width 0.5)
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), first_line(exc))
        raise ModelError(f"{where}: weights do not fit the architecture read from them ({detail[:160]})") from None
    if [k for k in missing if not k.startswith("classifier.")]:
        raise ModelError(f"{where}: weights missing for {', '.join(missing[:3])}")
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# preprocessing


def _preprocessing(cfg: dict | None):
    """timm's pretrained_cfg (input_size, crop_pct, interpolation, mean, std) as a Preprocessing; ImageNet's
    (resize 256, center crop 224, bilinear) without one."""
    from tuneforge.data.images import Preprocessing

    pre = (cfg or {}).get("pretrained_cfg") or {}
    size = pre.get("test_input_size") or pre.get("input_size") or [3, 224, 224]
    h, w = int(size[-2]), int(size[-1])
    crop = float(pre.get("test_crop_pct") or pre.get("crop_pct") or 0.875)
    interp = str(pre.get("interpolation") or "bilinear")
    mean = pre.get("mean") or (0.485, 0.456, 0.406)
    std = pre.get("std") or (0.229, 0.224, 0.225)
    return Preprocessing(
        height=h,
        width=w,
        resize_shortest=int(min(h, w) / crop) if crop < 1 else None,
        mean=tuple(mean),
        std=tuple(std),
        resample=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
    )


def _labels(cfg: dict | None, n: int) -> dict[int, str] | None:
    names = (cfg or {}).get("label_names")
    if isinstance(names, list) and len(names) == n:
        return {i: str(x) for i, x in enumerate(names)}
    return None


# ---------------------------------------------------------------------------------------------------------------
# resolving


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _writer(make_model, cfg: dict | None):
    """`write(source, directory)` for convert_into_cache: the model from `make_model()`, with timm's label names and
    preprocessing when `cfg` has them."""

    def write(_source: Path, out: Path) -> None:
        from tuneforge.models.vision import _save

        model = make_model()
        labels = _labels(cfg, model.config.num_labels)
        if labels:
            model.config.id2label = labels
            model.config.label2id = {v: k for k, v in labels.items()}
        _save(model, out, _preprocessing(cfg).to_hf())

    return write


def resolve_checkpoint_file(file: Path) -> Path:
    """A transformers directory (converted once, keyed by the file's content) for a torchvision/timm state dict."""
    from tuneforge.models.loader import convert_into_cache

    return convert_into_cache(
        f"converted-{_digest([file])}",
        file,
        _writer(lambda: build_model(load_state_dict(file), str(file)), None),
        "~2 s",
    )


def resolve_timm_dir(path: Path, cfg: dict) -> Path:
    """A timm model directory: converted when its weights are a plain ResNet (or a torchvision MobileNetV2);
    otherwise the directory itself when timm is installed (transformers loads it through TimmWrapper); otherwise a
    ModelError saying what it needs."""
    from tuneforge.models.loader import cached_conversion, convert_into_cache

    weights = next((path / f for f in TIMM_WEIGHTS if (path / f).is_file()), None)
    arch = cfg["architecture"]
    if weights is None:
        raise ModelError(f"timm model directory {path} has no weights ({' or '.join(TIMM_WEIGHTS)})")
    name = f"converted-{_digest([weights, path / 'config.json'])}"
    done = cached_conversion(name)
    if done is not None:
        return done
    where = f"{path} ({arch})"
    state = load_state_dict(weights)
    try:
        model = build_model(state, where)
    except ModelError as exc:  # not a layout converted here: timm itself can load it, through transformers
        if importlib.util.find_spec("timm") is not None:
            return path
        reason = str(exc).removeprefix(f"{where}: ")
        raise ModelError(
            f"timm model directory {path} (architecture '{arch}': {reason}) needs the timm library: "
            f"pip install timm torchvision"
        ) from None
    return convert_into_cache(name, weights, _writer(lambda: model, cfg), "~2 s")
