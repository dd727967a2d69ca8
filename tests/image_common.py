"""Tiny image models and image folders for tests: a random HF ResNet (a CNN) and ViT saved with their image
preprocessing, and a folder of class folders whose classes differ visibly (the models learn them in a few steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "stripes")


def make_image_folder(root: Path, per_class: int = 16, size: int = 40, classes=CLASSES, seed: int = 0) -> Path:
    """root/<class>/<nn>.png: noise with a red disc, a green square or blue stripes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            c = size // 2 + int(rng.integers(-3, 4))
            if name == "circle":
                a[(yy - c) ** 2 + (xx - c) ** 2 < (size // 3) ** 2] = [220, 40, 40]
            elif name == "square":
                a[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = [40, 220, 40]
            else:
                a[:, int(rng.integers(0, 4)) :: 4] = [40, 40, 220]
            Image.fromarray(a).save(root / name / f"{i:02d}.png")
    return root


def make_tiny_resnet(path: Path, side: int = 32) -> str:
    """A 2-stage ResNet (6k parameters) with a 4-way head, resize-and-crop preprocessing to side x side."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    from tuneforge.data.images import Preprocessing

    torch.manual_seed(0)
    ResNetForImageClassification(
        ResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=4
        )
    ).save_pretrained(path)
    Preprocessing(
        height=side, width=side, resize_shortest=side + side // 8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    ).save_pretrained(path)
    return str(path)


def make_tiny_vit(path: Path, side: int = 32) -> str:
    """A 2-layer ViT (hidden 32, patches of 8) resizing straight to side x side."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from tuneforge.data.images import Preprocessing

    torch.manual_seed(0)
    ViTForImageClassification(
        ViTConfig(
            image_size=side,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=4,
        )
    ).save_pretrained(path)
    Preprocessing(
        height=side, width=side, resize_shortest=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    ).save_pretrained(path)
    return str(path)
