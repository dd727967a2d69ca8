"""Image data: reading labelled image records, opening images, preprocessing, augmentation and batch mixing.

Every image is addressed by a string *ref*, so that a split can be saved as JSON and read back later:

- an absolute, resolved file path;
- ``builtin:fashion-mnist:train:<i>`` / ``builtin:fashion-mnist:test:<i>`` (the Debian package
  dataset-fashion-mnist, or the directory in ``TUNEFORGE_FASHION_MNIST_DIR``);
- ``builtin:digits:<i>`` (scikit-learn's bundled 8x8 digits, scaled to 0..255);
- ``dataset:<absolute dir>:<row>`` for a directory written by ``datasets`` ``save_to_disk`` (its one image
  column), or ``dataset:<absolute dir>:<row>:<column>`` when the column cannot be told from the features.

All randomness of the augmentations and of CutMix/MixUp comes from torch's generator: CutMix/MixUp draw from the
global one in the training step (whose state a checkpoint saves), and the image task runs each training image's
transform under `seeded_draw`, seeded by (seed, epoch, row) through `EpochIndexSampler`, so a resumed run draws
the same crops, flips and mixes as the uninterrupted one.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageEnhance, ImageOps

from tuneforge.errors import ConfigError, DataError, first_line
from tuneforge.registry import closest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PREPROCESSOR_CONFIG = "preprocessor_config.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------------------------------------
# builtin image sets
# ---------------------------------------------------------------------------------------------------------

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


def _builtin_name(source: str) -> str | None:
    """'fashion-mnist', 'fashion-mnist:test' or 'digits' for a builtin image source, None when not one."""
    name = source.split(":", 1)[1] if source.startswith("builtin:") else source
    name = _ALIASES.get(name, name)
    return name if name in BUILTIN_IMAGE_SETS else None


def builtin_image_labels(name: str) -> list[str] | None:
    """Label names in id order for a builtin image set (``builtin:fashion-mnist``, ``builtin:digits``, with or
    without the ``builtin:`` prefix); None for anything else."""
    key = _builtin_name(str(name))
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


def _builtin_records(name: str) -> pd.DataFrame:
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


def _open_builtin(ref: str) -> Image.Image:
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


# ---------------------------------------------------------------------------------------------------------
# `datasets` directories
# ---------------------------------------------------------------------------------------------------------

_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _is_datasets_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in _DATASETS_MARKERS)


@functools.lru_cache(maxsize=8)
def _load_dataset(directory: str):
    import datasets

    try:
        return datasets.load_from_disk(directory)
    except Exception as exc:
        raise DataError(
            f"{directory}: not a directory saved by `datasets` ({first_line(exc, 160, whole=True)})"
        ) from None


@functools.lru_cache(maxsize=8)
def _dataset_column(directory: str, column: str):
    """The data set of `directory` reduced to `column`, so that reading a row decodes only its image."""
    return _load_dataset(directory).select_columns([column])


def _auto_image_column(features) -> str | None:
    """The one column that holds images (an Image feature, else the one binary column); None when unclear."""
    import datasets

    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if len(images) == 1:
        return images[0]
    if images:
        return None
    binary = [c for c, f in features.items() if isinstance(f, datasets.Value) and "binary" in f.dtype]
    return binary[0] if len(binary) == 1 else None


def _dataset_records(path: Path, image_column: str, label_column: str) -> pd.DataFrame:
    import datasets

    ds = _load_dataset(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(
                f"{path}: a DatasetDict without a 'train' split (has {', '.join(ds)}); name the "
                f"split's directory instead, e.g. {path / next(iter(ds))}"
            )
        path = path / "train"
        if not (path / "state.json").is_file():
            raise DataError(f"{path}: the 'train' split of the DatasetDict has no directory of its own")
        ds = _load_dataset(str(path))
    source = str(path)
    for key, col in (("data.image_column", image_column), ("data.label_column", label_column)):
        if col not in ds.column_names:
            raise DataError(
                f"{source}: no column '{col}' (set by {key}){closest(col, ds.column_names)}; "
                f"available columns: {', '.join(ds.column_names)}"
            )
    feature = ds.features[image_column]
    kind = "image" if isinstance(feature, datasets.Image) else None
    if isinstance(feature, datasets.Value):
        kind = "bytes" if "binary" in feature.dtype else "path" if "string" in feature.dtype else None
    if kind is None:
        raise DataError(
            f"{source}: column '{image_column}' (data.image_column) holds {feature!r}, not images "
            f"(an Image feature, bytes or file paths)"
        )
    table = ds.data
    _first_null(table.column(image_column), source, image_column, "an image")
    labels = table.column(label_column).to_pylist()
    label_feature = ds.features[label_column]
    names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    out_labels = []
    for i, y in enumerate(labels):
        if names is not None and y is not None:
            y = names[y] if 0 <= y < len(names) else None  # ClassLabel -1: no label
        out_labels.append(_label(y, source, i, label_column, "data.label_column"))
    if kind == "path":
        refs = []
        for i, p in enumerate(table.column(image_column).to_pylist()):
            candidates = [Path(p).expanduser()] if Path(p).expanduser().is_absolute() else [path / p, Path(p)]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise DataError(f"{source}: row {i + 1}: image file not found: {p} (column '{image_column}')")
            refs.append(str(found.resolve()))
    else:
        suffix = "" if _auto_image_column(ds.features) == image_column else f":{image_column}"
        refs = [f"dataset:{path.resolve()}:{i}{suffix}" for i in range(len(ds))]
    return pd.DataFrame({"image": refs, "label": out_labels})


def _first_null(column, source: str, name: str, what: str) -> None:
    if column.null_count:
        i = next(i for i, v in enumerate(column.to_pylist()) if v is None)
        raise DataError(f"{source}: row {i + 1}: column '{name}' is empty, not {what}")


def _parse_dataset_ref(ref: str) -> tuple[str, int, str | None]:
    rest = ref[len("dataset:") :]
    directory, _, row = rest.rpartition(":")
    if directory and row.isdigit() and Path(directory).is_dir():
        return directory, int(row), None
    head, _, column = rest.rpartition(":")
    directory, _, row = head.rpartition(":")
    if directory and row.isdigit():
        return directory, int(row), column
    raise DataError(f"cannot read image {ref}: not a reference dataset:<directory>:<row>[:<column>]")


def _open_dataset(ref: str) -> Image.Image:
    import datasets

    directory, row, column = _parse_dataset_ref(ref)
    if not Path(directory).is_dir():
        raise DataError(f"cannot read image {ref}: the directory {directory} does not exist")
    ds = _load_dataset(directory)
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"cannot read image {ref}: {directory} holds a DatasetDict; name a split's directory")
    column = column or _auto_image_column(ds.features)
    if column is None or column not in ds.column_names:
        raise DataError(f"cannot read image {ref}: cannot tell which column of {directory} holds the images")
    if not 0 <= row < len(ds):
        raise DataError(f"cannot read image {ref}: row {row} is out of range (the data set has {len(ds)} rows)")
    try:
        value = _dataset_column(directory, column)[row][column]
        if isinstance(value, dict):  # an undecoded Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            value = Image.open(io.BytesIO(value))
        elif isinstance(value, str):
            value = Image.open(value)
        if not isinstance(value, Image.Image):
            raise ValueError(f"column '{column}' holds a {type(value).__name__}, not an image")
        value.load()
        return _to_rgb(value)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read image {ref}: {_image_reason(exc)}") from None


# ---------------------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------------------


def _image_reason(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):  # its message repeats the path
        return "not an image file (or in a format Pillow cannot read)"
    return first_line(exc, 300, whole=True)


def _label(y, source: str, i: int, column: str, key: str) -> str:
    if y is None or (isinstance(y, float) and math.isnan(y)):
        raise DataError(f"{source}: row {i + 1}: column '{column}' ({key}) is empty, not a label")
    if isinstance(y, (bool, np.bool_)):
        return str(bool(y))
    if isinstance(y, (float, np.floating)) and float(y).is_integer():
        return str(int(y))  # an int column with a missing value was read as floats
    if isinstance(y, (int, np.integer)):
        return str(int(y))
    if isinstance(y, (bytes, bytearray)):
        try:
            return bytes(y).decode("utf-8")
        except UnicodeDecodeError:
            pass
    if isinstance(y, (list, tuple, dict, np.ndarray, bytes, bytearray)):
        raise DataError(f"{source}: row {i + 1}: column '{column}' ({key}) holds a {type(y).__name__}, not one label")
    text = str(y)
    if not text.strip():
        raise DataError(f"{source}: row {i + 1}: column '{column}' ({key}) is empty, not a label")
    return text


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _folder_records(root: Path, source: str) -> pd.DataFrame:
    refs, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(p for p in class_dir.rglob("*") if _is_image_file(p)):
            refs.append(str(f.resolve()))
            labels.append(class_dir.name)
    if not refs:
        raise DataError(
            f"{source}: no images found: expected class folders <dir>/<class name>/<image file> "
            f"with files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    return pd.DataFrame({"image": refs, "label": labels})


def _table_records(path: Path, source: str, key: str, image_column: str, label_column: str) -> pd.DataFrame:
    from tuneforge.data.sources import read_table, require_columns

    df = read_table(source, key)
    require_columns(df, {"data.image_column": image_column, "data.label_column": label_column}, source)
    base = path.resolve().parent
    refs, labels = [], []
    for i, (p, y) in enumerate(zip(df[image_column].tolist(), df[label_column].tolist())):
        if isinstance(p, (bytes, bytearray, dict)):
            raise DataError(
                f"{source}: row {i + 1}: column '{image_column}' (data.image_column) holds "
                f"{'bytes' if not isinstance(p, dict) else 'a mapping'}, not a file path; save the "
                f"images as files, or use a directory saved by `datasets`"
            )
        if p is None or (isinstance(p, float) and math.isnan(p)) or not str(p).strip():
            raise DataError(
                f"{source}: row {i + 1}: column '{image_column}' (data.image_column) is empty, not an image path"
            )
        file = Path(str(p).strip()).expanduser()
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            raise DataError(f"{source}: row {i + 1}: image file not found: {file} (column '{image_column}')")
        refs.append(str(file.resolve()))
        labels.append(_label(y, source, i, label_column, "data.label_column"))
    return pd.DataFrame({"image": refs, "label": labels})


def read_image_records(source: str, key: str, image_column: str = "image", label_column: str = "label") -> pd.DataFrame:
    """The labelled images of `source` (the value of config key `key`): a DataFrame with the columns `image`
    (a ref, see the module doc) and `label` (a str), indexed by row number 0..n-1.

    `source` is a directory of class folders, a csv/tsv/jsonl/json/parquet table with an image path column and a
    label column (relative paths are relative to the table's directory), a directory saved by `datasets`, or a
    builtin set (builtin:fashion-mnist, builtin:fashion-mnist:test, builtin:digits)."""
    if source is None or not str(source).strip():
        raise DataError(
            f"{key}: is empty: set it to a folder of class folders, a table of image paths and "
            f"labels, a directory saved by `datasets`, or a builtin image set "
            f"({', '.join('builtin:' + n for n in BUILTIN_IMAGE_SETS)})"
        )
    source = str(source).strip()
    if source.startswith("builtin:"):
        name = _builtin_name(source)
        if name is None:
            available = ["builtin:" + n for n in BUILTIN_IMAGE_SETS]
            raise DataError(
                f"{key}: unknown builtin image set '{source}'{closest(source, available)}; "
                f"available: {', '.join(available)}"
            )
        df = _builtin_records(name)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"{key}: file or directory not found: {source}")
        if _is_datasets_dir(path):
            df = _dataset_records(path, image_column, label_column)
        elif path.is_dir():
            df = _folder_records(path, source)
        else:
            df = _table_records(path, source, key, image_column, label_column)
    if len(df) == 0:
        raise DataError(f"{source}: contains no images")
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# opening and checking images
# ---------------------------------------------------------------------------------------------------------


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16/32-bit grayscale: stretch to 8 bits
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.rint(a).astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def open_image(ref: str) -> Image.Image:
    """The image of `ref`, fully loaded, in RGB mode. An unreadable, corrupt or truncated image is a DataError
    'cannot read image <path>: <reason>'."""
    ref = str(ref)
    if ref.startswith("builtin:"):
        return _open_builtin(ref)
    if ref.startswith("dataset:"):
        return _open_dataset(ref)
    try:
        with Image.open(ref) as im:
            im.load()
            out = _to_rgb(im)
            if out is im:
                out = im.copy()
        return out
    except FileNotFoundError:
        raise DataError(f"cannot read image {ref}: file not found") from None
    except Exception as exc:
        raise DataError(f"cannot read image {ref}: {_image_reason(exc)}") from None


def check_images(refs: list[str], limit: int | None = None) -> None:
    """Open each file ref (at most `limit` of them) cheaply, with PIL's open + verify, and raise the DataError of
    the first bad one. Builtin and dataset refs are skipped."""
    checked = 0
    for ref in refs:
        ref = str(ref)
        if ref.startswith(("builtin:", "dataset:")):
            continue
        if limit is not None and checked >= limit:
            return
        checked += 1
        try:
            with Image.open(ref) as im:
                im.verify()
        except FileNotFoundError:
            raise DataError(f"cannot read image {ref}: file not found") from None
        except Exception as exc:
            raise DataError(f"cannot read image {ref}: {_image_reason(exc)}") from None


def limit_per_class(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most `n` rows per label (a sample seeded by `seed`), in the original order."""
    if int(n) < 1:
        raise ConfigError(f"the number of images per class must be at least 1, not {n}")
    rng = np.random.default_rng(int(seed))
    labels = df["label"].to_numpy()
    keep: list[int] = []
    for label in sorted(pd.unique(labels), key=str):
        positions = np.flatnonzero(labels == label)
        if len(positions) > n:
            positions = rng.choice(positions, size=int(n), replace=False)
        keep.extend(int(p) for p in positions)
    return df.iloc[sorted(keep)]


# ---------------------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------------------

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_RESAMPLE_NAMES = {int(v): k for k, v in RESAMPLE.items()}


def _three(value, what: str, where: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        value = [value]
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {what} must be a number or a list of 3 numbers, not {value!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ConfigError(f"{where}: {what} must be a number or a list of 3 numbers, not {value!r}")
    return (values[0], values[1], values[2])


def _hw(value, where: str, key: str) -> tuple[int | None, int | None, int | None]:
    """(height, width, shortest_edge) of an HF `size`/`crop_size` value."""
    if value is None:
        return None, None, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value), int(value), None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1]), None
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"]), None
        if "shortest_edge" in value:
            return None, None, int(value["shortest_edge"])
        if "size" in value:
            return int(value["size"]), int(value["size"]), None
    raise ConfigError(
        f"{where}: cannot read {key}={value!r} (expected an int, {{'height', 'width'}} or {{'shortest_edge'}})"
    )


@dataclass
class Preprocessing:
    """How an image becomes model input: resize (the shorter side to `resize_shortest` then a center crop of
    height x width, or straight to height x width when `resize_shortest` is None), multiply by
    `rescale_factor`, normalise with `mean`/`std`."""

    height: int
    width: int
    resize_shortest: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bilinear"
    rescale_factor: float = 1 / 255
    #: what transformers' Trainer reads from its processing class (the model's main input)
    model_input_names: ClassVar[list[str]] = ["pixel_values"]

    def __post_init__(self):
        self.height, self.width = int(self.height), int(self.width)
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"image size must be positive, not {self.height}x{self.width}")
        if self.resize_shortest is not None:
            self.resize_shortest = int(self.resize_shortest)
            if self.resize_shortest < 1:
                raise ConfigError(f"resize_shortest must be positive, not {self.resize_shortest}")
        self.mean = _three(self.mean, "mean", "preprocessing")
        self.std = _three(self.std, "std", "preprocessing")
        if any(s == 0 for s in self.std):
            raise ConfigError(f"preprocessing: std must not be 0, got {self.std}")
        if isinstance(self.resample, int) and not isinstance(self.resample, bool):
            self.resample = _RESAMPLE_NAMES.get(int(self.resample), str(self.resample))
        if self.resample not in RESAMPLE:
            raise ConfigError(
                f"unknown resample '{self.resample}'{closest(str(self.resample), RESAMPLE)}; "
                f"choose one of {', '.join(RESAMPLE)}"
            )
        self.rescale_factor = float(self.rescale_factor)

    @classmethod
    def imagenet(cls, size: int = 224) -> Preprocessing:
        return cls(
            height=size, width=size, resize_shortest=round(size * 256 / 224), mean=IMAGENET_MEAN, std=IMAGENET_STD
        )

    @classmethod
    def from_dir(cls, path) -> Preprocessing:
        """The preprocessing of a transformers image model directory (its preprocessor_config.json); ImageNet
        defaults (resize to 256, center crop 224) when the file is missing."""
        file = Path(path) / PREPROCESSOR_CONFIG
        if not file.is_file():
            return cls.imagenet()
        try:
            cfg = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{file}: cannot be read: {first_line(exc, 300, whole=True)}") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"{file}: expected a JSON object")
        return cls.from_hf(cfg, str(file))

    @classmethod
    def from_hf(cls, cfg: dict, where: str = PREPROCESSOR_CONFIG) -> Preprocessing:
        """From the keys of an HF preprocessor_config.json."""
        h, w, shortest = _hw(cfg.get("size"), where, "size")
        ch, cw, _ = _hw(cfg.get("crop_size"), where, "crop_size")
        crop = bool(cfg.get("do_center_crop", False)) and ch is not None
        if crop:
            height, width = ch, cw
            resize_shortest = shortest if shortest is not None else (min(h, w) if h is not None else None)
            if resize_shortest is None:
                resize_shortest = round(max(height, width) * 256 / 224)
        elif shortest is not None:
            crop_pct = cfg.get("crop_pct")
            height = width = shortest
            resize_shortest = round(shortest / float(crop_pct)) if crop_pct else None
        elif h is not None:
            height, width, resize_shortest = h, w, None
        else:
            height = width = 224
            resize_shortest = None
        if cfg.get("do_normalize", True) is False:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        else:
            mean = _three(cfg.get("image_mean", IMAGENET_MEAN), "image_mean", where)
            std = _three(cfg.get("image_std", IMAGENET_STD), "image_std", where)
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) is not False else 1.0
        resample = cfg.get("resample", "bilinear")
        if isinstance(resample, int) and resample not in _RESAMPLE_NAMES:
            resample = "bilinear"
        return cls(
            height=height,
            width=width,
            resize_shortest=resize_shortest,
            mean=mean,
            std=std,
            resample=resample,
            rescale_factor=rescale,
        )

    def with_size(self, n: int) -> Preprocessing:
        """The same preprocessing for an n x n input; the resize/crop ratio is kept."""
        n = int(n)
        rs = None
        if self.resize_shortest is not None:
            rs = max(n, round(self.resize_shortest * n / min(self.height, self.width)))
        return replace(self, height=n, width=n, resize_shortest=rs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(
                f"unknown preprocessing key '{unknown[0]}'{closest(unknown[0], names)}; "
                f"known: {', '.join(sorted(names))}"
            )
        return cls(**d)

    def to_hf(self) -> dict:
        """HF-style preprocessor_config.json keys."""
        crop = self.resize_shortest is not None
        return {
            "do_resize": True,
            "size": {"shortest_edge": self.resize_shortest} if crop else {"height": self.height, "width": self.width},
            "resample": int(RESAMPLE[self.resample]),
            "do_center_crop": crop,
            "crop_size": {"height": self.height, "width": self.width},
            "do_rescale": True,
            "rescale_factor": self.rescale_factor,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
        }

    def save_pretrained(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        file = directory / PREPROCESSOR_CONFIG
        file.write_text(json.dumps(self.to_hf(), indent=2) + "\n", encoding="utf-8")
        return file


# ---------------------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------------------


def _center_crop(im: Image.Image, height: int, width: int) -> Image.Image:
    """The central height x width region (zero padding where the image is smaller)."""
    w, h = im.size
    left, top = (w - width) // 2, (h - height) // 2
    return im.crop((left, top, left + width, top + height))


def _resize(im: Image.Image, prep: Preprocessing) -> Image.Image:
    resample = RESAMPLE[prep.resample]
    if prep.resize_shortest is None:
        return im if im.size == (prep.width, prep.height) else im.resize((prep.width, prep.height), resample)
    w, h = im.size
    scale = prep.resize_shortest / min(w, h)
    size = (
        (prep.resize_shortest, max(1, round(h * scale))) if w <= h else (max(1, round(w * scale)), prep.resize_shortest)
    )
    if size != im.size:
        im = im.resize(size, resample)
    return _center_crop(im, prep.height, prep.width)


def _normalizer(prep: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(3, 1, 1)
    factor = prep.rescale_factor

    def to_tensor(im: Image.Image) -> torch.Tensor:
        if im.mode != "RGB":
            im = _to_rgb(im)
        x = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32)
        return (x * factor - mean) / std

    return to_tensor


def eval_transform(prep: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised float tensor [3, height, width]: resize (+ center crop), rescale, normalise."""
    to_tensor = _normalizer(prep)

    def transform(im: Image.Image) -> torch.Tensor:
        return to_tensor(_resize(im, prep))

    return transform


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()).item())


def _randint(lo: int, hi: int) -> int:
    """A uniform int in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, ()).item())


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height): a random area fraction in `scale` and aspect ratio in `ratio` (log
    uniform); after 10 failed tries the largest central crop within the ratio range."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1])
        aspect = math.exp(_uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, width - w), _randint(0, height - h), w, h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


# RandAugment ops: (image, signed magnitude in [-1, 1]) -> image. The magnitude's sign is drawn at random for the
# ops whose direction is arbitrary; the others use its absolute value.
_FILL = (128, 128, 128)


def _affine(im: Image.Image, coeffs: tuple) -> Image.Image:
    return im.transform(im.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=_FILL)


def _enhance(cls):
    return lambda im, m: cls(im).enhance(1.0 + 0.9 * m)


RANDAUGMENT_OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "identity": lambda im, m: im,
    "autocontrast": lambda im, m: ImageOps.autocontrast(im),
    "equalize": lambda im, m: ImageOps.equalize(im),
    "rotate": lambda im, m: im.rotate(30.0 * m, resample=Image.Resampling.BILINEAR, fillcolor=_FILL),
    "solarize": lambda im, m: ImageOps.solarize(im, threshold=int(round(256 - 256 * abs(m)))),
    "color": _enhance(ImageEnhance.Color),
    "posterize": lambda im, m: ImageOps.posterize(im, 8 - int(round(4 * abs(m)))),
    "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    # shears and translations keep the image centre fixed / move by a fraction of the size (150/331 at most)
    "shear_x": lambda im, m: _affine(im, (1, 0.3 * m, -0.3 * m * im.size[1] / 2, 0, 1, 0)),
    "shear_y": lambda im, m: _affine(im, (1, 0, 0, 0.3 * m, 1, -0.3 * m * im.size[0] / 2)),
    "translate_x": lambda im, m: _affine(im, (1, 0, (150 / 331) * m * im.size[0], 0, 1, 0)),
    "translate_y": lambda im, m: _affine(im, (1, 0, 0, 0, 1, (150 / 331) * m * im.size[1])),
}
_SIGNED = {"rotate", "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y"}
RANDAUGMENT_MAX_MAGNITUDE = 30


def rand_augment(im: Image.Image, num_ops: int, magnitude: float) -> Image.Image:
    """Apply `num_ops` ops drawn uniformly from RANDAUGMENT_OPS at `magnitude` (0..30), each with a random sign
    where the direction is arbitrary. Randomness: torch's global RNG."""
    names = list(RANDAUGMENT_OPS)
    m = float(magnitude) / RANDAUGMENT_MAX_MAGNITUDE
    for _ in range(int(num_ops)):
        name = names[int(torch.randint(len(names), ()).item())]
        signed = -m if name in _SIGNED and torch.rand(()).item() < 0.5 else m
        im = RANDAUGMENT_OPS[name](im, signed)
    return im


def train_transform(
    prep: Preprocessing,
    random_resized_crop: tuple[float, float] | None = (0.08, 1.0),
    flip: bool = True,
    randaugment: tuple[int, int] | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised float tensor [3, height, width] with augmentation: a random resized crop (area
    fraction in `random_resized_crop`, aspect ratio 3/4..4/3; eval-style resize/crop when None), a horizontal
    flip with probability 0.5, then RandAugment (num_ops, magnitude 0..30) when given. Randomness: torch's
    global RNG only."""
    if random_resized_crop is not None:
        lo, hi = (float(v) for v in random_resized_crop)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(
                f"random_resized_crop must be (min, max) area fractions with 0 < min <= max <= 1, "
                f"not {random_resized_crop}"
            )
    if randaugment is not None:
        num_ops, magnitude = randaugment
        if int(num_ops) < 0 or not 0 <= float(magnitude) <= RANDAUGMENT_MAX_MAGNITUDE:
            raise ConfigError(
                f"randaugment must be (num_ops >= 0, magnitude 0..{RANDAUGMENT_MAX_MAGNITUDE}), not {randaugment}"
            )
    to_tensor = _normalizer(prep)
    resample = RESAMPLE[prep.resample]

    def transform(im: Image.Image) -> torch.Tensor:
        if im.mode != "RGB":
            im = _to_rgb(im)
        if random_resized_crop is None:
            im = _resize(im, prep)
        else:
            left, top, w, h = random_resized_crop_box(im.size[0], im.size[1], (lo, hi))
            im = im.resize((prep.width, prep.height), resample, box=(left, top, left + w, top + h))
        if flip and torch.rand(()).item() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if randaugment is not None:
            im = rand_augment(im, num_ops, magnitude)
        return to_tensor(im)

    return transform


# ---------------------------------------------------------------------------------------------------------
# CutMix / MixUp
# ---------------------------------------------------------------------------------------------------------


def _beta(alpha: float) -> float:
    a = torch.tensor(float(alpha), dtype=torch.float32)
    return float(torch.distributions.Beta(a, a).sample().item())


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box with sides sqrt(1 - lam) of the image's, centred at a uniform random
    point and clipped to the image."""
    cut = math.sqrt(max(0.0, 1.0 - lam))
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ()).item()), int(torch.randint(width, ()).item())
    top, left = cy - ch // 2, cx - cw // 2
    return (
        min(max(top, 0), height),
        min(max(top + ch, 0), height),
        min(max(left, 0), width),
        min(max(left + cw, 0), width),
    )


def mix_batch(
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    cutmix: tuple[float, float] | None,
    mixup: tuple[float, float] | None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix or MixUp a batch: returns (pixel values, soft targets [B, num_classes] that sum to 1).

    `cutmix`/`mixup` are (alpha, prob). With both, each batch picks one with equal chance; the chosen one is
    applied with its prob, else the batch stays as it is (one-hot targets). Row i is mixed with row (i-1) mod B.
    CutMix's label weight is exactly the fraction of pixels kept. The inputs are not changed in place."""
    if labels.dim() != 1 or pixel_values.dim() != 4 or labels.shape[0] != pixel_values.shape[0]:
        raise ValueError(
            f"mix_batch expects pixel values [B, C, H, W] and labels [B], got "
            f"{tuple(pixel_values.shape)} and {tuple(labels.shape)}"
        )
    targets = torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)
    x = pixel_values
    choices = [(kind, cfg) for kind, cfg in (("cutmix", cutmix), ("mixup", mixup)) if cfg is not None]
    if len(choices) == 2:
        choices = [choices[0] if torch.rand(()).item() < 0.5 else choices[1]]
    if choices:
        kind, (alpha, prob) = choices[0]
        if torch.rand(()).item() < float(prob):
            lam = _beta(alpha)
            partner_x = torch.roll(pixel_values, 1, 0)
            partner_t = torch.roll(targets, 1, 0)
            if kind == "mixup":
                x = pixel_values * lam + partner_x * (1.0 - lam)
            else:
                height, width = pixel_values.shape[-2:]
                top, bottom, left, right = cutmix_box(height, width, lam)
                x = pixel_values.clone()
                x[:, :, top:bottom, left:right] = partner_x[:, :, top:bottom, left:right]
                lam = 1.0 - (bottom - top) * (right - left) / (height * width)
            targets = targets * lam + partner_t * (1.0 - lam)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return x, targets


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy against class ids (LongTensor [B]) or soft targets (FloatTensor [B, C])."""
    if targets.dim() == 1 and not targets.is_floating_point():
        return torch.nn.functional.cross_entropy(logits, targets)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(targets.to(logp.dtype) * logp).sum(dim=-1).mean()


# ---------------------------------------------------------------------------------------------------------
# augmentation a resumed run reproduces
# ---------------------------------------------------------------------------------------------------------


class EpochIndexSampler:
    """A shuffled order of `n` training rows per epoch (seeded by (seed, epoch)) that hands out `epoch * n + row`,
    so the dataset can seed each row's augmentation by (seed, epoch, row) (`seeded_draw`). Augmenting from
    torch's global generator instead ties the images to when the data loader fetched them: a resumed run fetches
    the batch after the checkpoint before the trainer restores the saved generator state, and its images (and
    every random draw after them) differ from the uninterrupted run's."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        base = self.epoch * self.n
        return iter([base + int(i) for i in torch.randperm(self.n, generator=g)])

    def __len__(self) -> int:
        return self.n


def seeded_draw(fn: Callable, seed: int, key: int):
    """`fn()` with torch's global generator seeded by (seed, key) for its duration and restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((int(seed) * 2_654_435_761 + int(key)) % (2**63))
        return fn()
