"""The builtin image sets: Fashion-MNIST (read from its IDX files) and scikit-learn's digits, as records and as
the images behind their ``builtin:`` refs."""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

from tuneforge.errors import DataError, first_line

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGITS_LABELS = [str(i) for i in range(10)]
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class ImageSet(NamedTuple):
    description: str
    labels: list[str]


BUILTIN_IMAGE_SETS: dict[str, ImageSet] = {
    "fashion-mnist": ImageSet(
        "Fashion-MNIST training set: 60,000 28x28 grayscale clothing images, 10 classes "
        "(Debian package dataset-fashion-mnist)",
        FASHION_MNIST_LABELS,
    ),
    "fashion-mnist:test": ImageSet(
        "Fashion-MNIST test set: 10,000 28x28 grayscale clothing images, 10 classes", FASHION_MNIST_LABELS
    ),
    "digits": ImageSet("scikit-learn's handwritten digits: 1,797 8x8 grayscale images, labels 0-9", DIGITS_LABELS),
}
_ALIASES = {"fashion-mnist:train": "fashion-mnist"}


def builtin_name(source: str) -> str | None:
    """'fashion-mnist', 'fashion-mnist:test' or 'digits' for a builtin image source, None when not one."""
    name = source.split(":", 1)[1] if source.startswith("builtin:") else source
    name = _ALIASES.get(name, name)
    return name if name in BUILTIN_IMAGE_SETS else None


def builtin_image_labels(name: str) -> list[str] | None:
    """Label names in id order for a builtin image set (``builtin:fashion-mnist``, ``builtin:digits``, with or
    without the ``builtin:`` prefix); None for anything else."""
    key = builtin_name(str(name))
    return list(BUILTIN_IMAGE_SETS[key].labels) if key else None


def _fashion_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)


def _idx_file(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DataError(
        "builtin:fashion-mnist needs the Debian package dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or TUNEFORGE_FASHION_MNIST_DIR "
        f"(no {stem}.gz in {directory})"
    )


def _read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file (unsigned bytes) as an array of `dims` dimensions."""
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08 or ndim != dims:
            raise ValueError(f"not an IDX file of unsigned bytes with {dims} dimension(s)")
        shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        offset = 4 + 4 * ndim
        if len(data) - offset != int(np.prod(shape)):
            raise ValueError(f"holds {len(data) - offset} bytes of data, the header says {int(np.prod(shape))}")
        return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(f"cannot read {path}: {first_line(exc, 300, whole=True)}") from None


@functools.lru_cache(maxsize=4)
def _fashion_labels(directory: str, split: str) -> np.ndarray:
    return _read_idx(_idx_file(Path(directory), _FASHION_FILES[split][1]), 1)


@functools.lru_cache(maxsize=4)
def _fashion_images(directory: str, split: str) -> np.ndarray:
    return _read_idx(_idx_file(Path(directory), _FASHION_FILES[split][0]), 3)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, np.asarray(d.target, dtype=np.int64)


def builtin_records(name: str) -> pd.DataFrame:
    """The records (columns `image`: a builtin ref, `label`: its class name) of the builtin set `name`."""
    if name == "digits":
        _, labels = _digits()
        prefix = "builtin:digits:"
        names = DIGITS_LABELS
    else:
        split = "test" if name.endswith(":test") else "train"
        labels = _fashion_labels(str(_fashion_dir()), split)
        prefix = f"builtin:fashion-mnist:{split}:"
        names = FASHION_MNIST_LABELS
    return pd.DataFrame(
        {"image": [f"{prefix}{i}" for i in range(len(labels))], "label": [names[int(y)] for y in labels]}
    )


def open_builtin(ref: str) -> Image.Image:
    """The RGB image of a ``builtin:`` ref; a malformed or out-of-range ref is a DataError."""
    parts = ref.split(":")
    try:
        if parts[1] == "digits" and len(parts) == 3:
            images = _digits()[0]
        elif parts[1] == "fashion-mnist" and len(parts) == 4 and parts[2] in _FASHION_FILES:
            images = _fashion_images(str(_fashion_dir()), parts[2])
        else:
            raise ValueError
        i = int(parts[-1])
    except (ValueError, IndexError):
        raise DataError(
            f"cannot read image {ref}: not a builtin image reference (builtin:digits:<i>, "
            f"builtin:fashion-mnist:train:<i> or builtin:fashion-mnist:test:<i>)"
        ) from None
    if not 0 <= i < len(images):
        raise DataError(f"cannot read image {ref}: index {i} is out of range (the set has {len(images)} images)")
    return Image.fromarray(np.ascontiguousarray(images[i]), mode="L").convert("RGB")
