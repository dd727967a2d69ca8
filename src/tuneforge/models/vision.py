"""Image classification backbones for the builtin image models.

Two builtins ship as plain PyTorch state dicts inside PyPI packages; each is converted once into a transformers
directory (config.json + model.safetensors + preprocessor_config.json) in the cache, after which any
`AutoModelForImageClassification.from_pretrained(dir, num_labels=N, ignore_mismatched_sizes=True)` works:

* `builtin:mobilenet-v2`: torchvision's ImageNet MobileNetV2, mapped key by key onto
  `transformers.MobileNetV2ForImageClassification` (symmetric k//2 padding, BatchNorm eps 1e-5, ReLU6).
* `builtin:efficientnet-lite0`: transformers has no EfficientNet-Lite, so this module defines a small
  transformers-compatible model, `TuneforgeVisionForImageClassification` (model_type "tuneforge-vision"), whose
  blocks are the `MBConvBlock`s of the `efficientnet-lite-pytorch` package. Call `ensure_registered()` before loading
  such a directory through the Auto classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import transformers
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from tuneforge.errors import ModelError

MODEL_TYPE = "tuneforge-vision"
EFFICIENTNET_HINT = (
    "EfficientNet-Lite models need the package 'efficientnet-lite-pytorch': "
    "pip install --no-deps efficientnet-lite-pytorch==0.1.0"
)
#: architecture name -> the efficientnet_lite_pytorch model name (only lite0 has builtin weights)
ARCHITECTURES = {f"efficientnet_lite{i}": f"efficientnet-lite{i}" for i in range(5)}

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# EfficientNet-Lite was trained (TF reference code, lite/efficientnet_lite_builder.py) on (x - 127) / 128 of 0..255
LITE_MEAN, LITE_STD = [round(127 / 255, 6)] * 3, [round(128 / 255, 6)] * 3


# ---------------------------------------------------------------------------------------------------------------
# the wrapper model


class TuneforgeVisionConfig(transformers.PretrainedConfig):
    """Config of `TuneforgeVisionForImageClassification`.

    architecture       efficientnet_lite0 (..lite4: same code, no builtin weights)
    num_labels         size of the classification head (a base-config property, stored as id2label)
    dropout            dropout before the classifier
    drop_connect_rate  stochastic depth of the blocks while training (the reference code's 0.2)
    image_size         the input size the weights were trained at (padding is computed per input, any size works)
    """

    model_type = MODEL_TYPE
    architecture: str = "efficientnet_lite0"
    dropout: float = 0.2
    drop_connect_rate: float = 0.2
    image_size: int = 224
    num_channels: int = 3


def _efficientnet_package():
    try:
        import efficientnet_lite_pytorch
    except ImportError:
        raise ModelError(EFFICIENTNET_HINT) from None
    return efficientnet_lite_pytorch


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TensorFlow "SAME" zero padding computed from each input's size (asymmetric for even inputs at
    stride 2), which the EfficientNet-Lite weights were trained with. It keeps nn.Conv2d's constructor: PEFT builds a
    LoRA adapter of a convolution as `type(base)(in, r, kernel, stride, padding)`, so the adapter pads the same way
    (the efficientnet package's own same-padding class has another signature and breaks that)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in (
            (x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1]),
            (x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0]),
        ):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A fresh nn.Conv2d (1x1, stride 1: no padding to do) or Conv2dSame with `conv`'s shape (weights load later)."""
    k, s = tuple(conv.kernel_size), tuple(conv.stride)
    cls = nn.Conv2d if k == (1, 1) and s == (1, 1) else Conv2dSame
    return cls(
        conv.in_channels,
        conv.out_channels,
        k,
        s,
        padding=0,
        dilation=tuple(conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
    )


class EfficientNetLiteBackbone(nn.Module):
    """Stem (conv + BN + ReLU6), the MBConv blocks (`blocks`, one `nn.ModuleList`), head conv + BN + ReLU6,
    global average pool. Returns (last feature map, pooled features, per-block outputs)."""

    def __init__(self, config: TuneforgeVisionConfig):
        super().__init__()
        if config.architecture not in ARCHITECTURES:
            raise ModelError(
                f"unknown tuneforge-vision architecture '{config.architecture}'; known: {', '.join(ARCHITECTURES)}"
            )
        pkg = _efficientnet_package()
        # the package builds the layout (block arguments, channel rounding, fixed stem/head); its convolutions are
        # then replaced by plain ones padding per input (Conv2dSame), so any input size works; at the training size
        # this is exactly the static padding of the package's own from_pretrained model
        blocks_args, params = pkg.get_model_params(
            ARCHITECTURES[config.architecture],
            {"image_size": None, "num_classes": 1, "drop_connect_rate": config.drop_connect_rate},
        )
        ref = pkg.EfficientNet(blocks_args, params)
        self.conv_stem = _plain_conv(ref._conv_stem)
        self.bn0 = ref._bn0
        self.blocks = ref._blocks
        for block in self.blocks:  # the package's MBConvBlock, its convolutions swapped for plain ones
            for attr in ("_expand_conv", "_depthwise_conv", "_project_conv", "_se_reduce", "_se_expand"):
                if hasattr(block, attr):
                    setattr(block, attr, _plain_conv(getattr(block, attr)))
        self.conv_head = _plain_conv(ref._conv_head)
        self.bn1 = ref._bn1
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop_connect_rate = params.drop_connect_rate or 0.0
        self.num_features = self.conv_head.out_channels

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False):
        x = self.act(self.bn0(self.conv_stem(pixel_values)))
        hidden = []
        for i, block in enumerate(self.blocks):
            # stochastic depth grows linearly with depth, as in the reference extract_features()
            x = block(x, drop_connect_rate=self.drop_connect_rate * i / len(self.blocks) or None)
            if output_hidden_states:
                hidden.append(x)
        x = self.act(self.bn1(self.conv_head(x)))
        return x, self.pool(x).flatten(1), tuple(hidden)


class TuneforgeVisionPreTrainedModel(transformers.PreTrainedModel):
    config_class = TuneforgeVisionConfig
    config: TuneforgeVisionConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        # transformers.initialization skips tensors already loaded from a checkpoint (`_is_hf_initialized`), so
        # this only touches what from_pretrained did not load (a re-sized classifier) or a model built from scratch
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            # small, as torchvision's MobileNet/EfficientNet classifiers: a fresh head starts near uniform outputs
            init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                init.zeros_(module.bias)


class TuneforgeVisionForImageClassification(TuneforgeVisionPreTrainedModel):
    """`backbone` (EfficientNetLiteBackbone) + `classifier` (Dropout, Linear(features, num_labels))."""

    def __init__(self, config: TuneforgeVisionConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = EfficientNetLiteBackbone(config)
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(self.backbone.num_features, config.num_labels)
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        # like ViT's patch embedding: the input-side projection below the first block
        return self.backbone.conv_stem

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_values = pixel_values.to(self.backbone.conv_stem.weight.dtype)
        _, pooled, hidden = self.backbone(pixel_values, output_hidden_states=bool(output_hidden_states))
        logits = self.classifier(pooled)
        loss = None if labels is None else self._loss(logits, labels.to(logits.device))
        if not return_dict:
            out = (logits,) + ((hidden,) if output_hidden_states else ())
            return ((loss,) + out) if loss is not None else out
        return ImageClassifierOutputWithNoAttention(
            loss=loss, logits=logits, hidden_states=hidden if output_hidden_states else None
        )

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1).long())
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


_REGISTERED = False


def ensure_registered() -> None:
    """Make AutoConfig / AutoModelForImageClassification know model_type "tuneforge-vision". Idempotent."""
    global _REGISTERED
    if _REGISTERED:
        return
    transformers.AutoConfig.register(MODEL_TYPE, TuneforgeVisionConfig, exist_ok=True)
    transformers.AutoModelForImageClassification.register(
        TuneforgeVisionConfig, TuneforgeVisionForImageClassification, exist_ok=True
    )
    _REGISTERED = True


ensure_registered()


def set_batchnorm_momentum(model: nn.Module, momentum: float = 0.1) -> int:
    """Set the (PyTorch-convention) momentum of every BatchNorm in `model`; returns how many were changed.

    transformers' MobileNetV2 builds its BatchNorms with momentum=0.997, a TensorFlow decay used as a PyTorch
    momentum: each training batch then replaces 99.7 % of the pretrained running statistics. Fine-tuning code that
    trains with BatchNorm in train mode should call this (0.1 = PyTorch default, 0.01 = the EfficientNet one)."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
            n += 1
    return n


# ---------------------------------------------------------------------------------------------------------------
# converting the shipped state dicts (called through tuneforge.models.loader.CONVERTERS, into a temporary directory)


def preprocessor_config(mean: list[float], std: list[float], resample: int) -> dict:
    """A transformers image-processor config: resize the shortest side to 256, center-crop 224, scale to 0..1,
    normalise. (`resample`: PIL code, 2 bilinear, 3 bicubic.)"""
    return {
        "image_processor_type": "MobileNetV2ImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 256},
        "resample": resample,
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
    }


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _bn_keys(src: str, dst: str) -> dict[str, str]:
    return {
        f"{src}.{k}": f"{dst}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }


def _conv_bn(conv: str, bn: str, dst: str) -> dict[str, str]:
    """torchvision conv + BatchNorm -> a transformers MobileNetV2ConvLayer (`convolution`, `normalization`)."""
    return {f"{conv}.weight": f"{dst}.convolution.weight", **_bn_keys(bn, f"{dst}.normalization")}


def mobilenet_v2_key_map() -> dict[str, str]:
    """Every torchvision MobileNetV2 state-dict key -> its transformers MobileNetV2ForImageClassification key."""
    hf = "mobilenet_v2"
    m = _conv_bn("features.0.0", "features.0.1", f"{hf}.conv_stem.first_conv")
    # features.1: expansion 1, so only depthwise + projection; transformers folds it into the stem
    m |= _conv_bn("features.1.conv.0.0", "features.1.conv.0.1", f"{hf}.conv_stem.conv_3x3")
    m |= _conv_bn("features.1.conv.1", "features.1.conv.2", f"{hf}.conv_stem.reduce_1x1")
    for i in range(2, 18):  # expand 1x1, depthwise 3x3, project 1x1 (linear)
        f, dst = f"features.{i}.conv", f"{hf}.layer.{i - 2}"
        m |= _conv_bn(f"{f}.0.0", f"{f}.0.1", f"{dst}.expand_1x1")
        m |= _conv_bn(f"{f}.1.0", f"{f}.1.1", f"{dst}.conv_3x3")
        m |= _conv_bn(f"{f}.2", f"{f}.3", f"{dst}.reduce_1x1")
    m |= _conv_bn("features.18.0", "features.18.1", f"{hf}.conv_1x1")
    m |= {"classifier.1.weight": "classifier.weight", "classifier.1.bias": "classifier.bias"}
    return m


def mobilenet_v2_config(num_labels: int = 1000):
    # tf_padding=False: torchvision pads symmetrically by k//2; eps 1e-5 is torchvision's BatchNorm default
    return transformers.MobileNetV2Config(
        tf_padding=False,
        layer_norm_eps=1e-5,
        hidden_act="relu6",
        classifier_dropout_prob=0.2,
        num_labels=num_labels,
        finegrained_output=True,
        first_layer_is_expansion=True,
        image_size=224,
    )


def _remap(state: dict[str, torch.Tensor], key_map: dict[str, str], what: str) -> dict[str, torch.Tensor]:
    unknown = sorted(set(state) - set(key_map))
    absent = sorted(set(key_map) - set(state))
    if unknown or absent:
        raise ModelError(f"{what}: unexpected state dict (unknown keys {unknown[:3]}, missing keys {absent[:3]})")
    return {key_map[k]: v for k, v in state.items()}


def build_mobilenet_v2(weights: Path):
    """transformers MobileNetV2ForImageClassification holding torchvision's weights (strict: every key mapped)."""
    model = transformers.MobileNetV2ForImageClassification(mobilenet_v2_config())
    model.load_state_dict(_remap(_load_state_dict(weights), mobilenet_v2_key_map(), weights.name), strict=True)
    return model.eval()


def efficientnet_lite_key_map(state_keys) -> dict[str, str]:
    """The package's EfficientNet keys -> TuneforgeVisionForImageClassification keys."""
    prefix = {
        "_conv_stem.": "backbone.conv_stem.",
        "_bn0.": "backbone.bn0.",
        "_blocks.": "backbone.blocks.",
        "_conv_head.": "backbone.conv_head.",
        "_bn1.": "backbone.bn1.",
        "_fc.": "classifier.1.",
    }
    out = {}
    for k in state_keys:
        src = next((p for p in prefix if k.startswith(p)), None)
        if src is not None:
            out[k] = prefix[src] + k[len(src) :]
    return out


def build_efficientnet_lite0(weights: Path):
    state = _load_state_dict(weights)
    config = TuneforgeVisionConfig(
        architecture="efficientnet_lite0", num_labels=state["_fc.weight"].shape[0], dropout=0.2, image_size=224
    )
    model = TuneforgeVisionForImageClassification(config)
    model.load_state_dict(_remap(state, efficientnet_lite_key_map(state), weights.name), strict=True)
    return model.eval()


def _save(model, out_dir: Path, preprocessor: dict) -> None:
    from transformers.utils import logging as hf_logging

    # the conversion prints one line (tuneforge.models.loader.convert_into_cache), not a progress bar for one shard
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")


def write_mobilenet_v2(weights: Path, out_dir: Path) -> None:
    _save(build_mobilenet_v2(weights), out_dir, preprocessor_config(IMAGENET_MEAN, IMAGENET_STD, resample=2))


def write_efficientnet_lite0(weights: Path, out_dir: Path) -> None:
    _save(build_efficientnet_lite0(weights), out_dir, preprocessor_config(LITE_MEAN, LITE_STD, resample=3))
