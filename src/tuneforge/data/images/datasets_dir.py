"""Directories written by `datasets` ``save_to_disk``: their records (the image and label columns) and the images
behind their ``dataset:`` refs."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pandas as pd
from PIL import Image

from tuneforge.data.images.opening import image_reason, to_rgb
from tuneforge.data.images.records import label_text
from tuneforge.errors import DataError, first_line
from tuneforge.registry import closest

_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_datasets_dir(path: Path) -> bool:
    """Whether `path` is a directory written by `datasets` (a Dataset or a DatasetDict)."""
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


def dataset_records(path: Path, image_column: str, label_column: str) -> pd.DataFrame:
    """The records (columns `image`: a ref, `label`: a str) of a `datasets` directory (of its 'train' split for a
    DatasetDict): file refs for a column of paths, ``dataset:`` refs for images or bytes."""
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
        out_labels.append(label_text(y, source, i, label_column, "data.label_column"))
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


def open_dataset(ref: str) -> Image.Image:
    """The RGB image of a ``dataset:`` ref; a bad ref or an unreadable image is a DataError."""
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
        return to_rgb(value)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read image {ref}: {image_reason(exc)}") from None
