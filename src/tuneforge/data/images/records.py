"""Records of image files: a folder of class folders or a table of image paths and labels, label values as text,
and capping the records per class."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tuneforge.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def label_text(y, source: str, i: int, column: str, key: str) -> str:
    """Row `i`'s label value `y` as text; an empty or composite value is a DataError naming `column` (config key
    `key`)."""
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


def folder_records(root: Path, source: str) -> pd.DataFrame:
    """The records of a folder of class folders: each image file under <root>/<class name>/, labelled by its folder."""
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


def table_records(path: Path, source: str, key: str, image_column: str, label_column: str) -> pd.DataFrame:
    """The records of a table of image paths (relative to the table's directory) and labels."""
    from tuneforge.data.columns import require_columns
    from tuneforge.data.sources import read_table

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
        labels.append(label_text(y, source, i, label_column, "data.label_column"))
    return pd.DataFrame({"image": refs, "label": labels})


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
