"""Image refs: reading a source of labelled images into refs (`read_image_records`) and a ref back into its image
(`open_image`).

Every image is addressed by a string *ref*, so that a split can be saved as JSON and read back later:

- an absolute, resolved file path;
- ``builtin:fashion-mnist:train:<i>`` / ``builtin:fashion-mnist:test:<i>`` (the Debian package
  dataset-fashion-mnist, or the directory in ``TUNEFORGE_FASHION_MNIST_DIR``);
- ``builtin:digits:<i>`` (scikit-learn's bundled 8x8 digits, scaled to 0..255);
- ``dataset:<absolute dir>:<row>`` for a directory written by ``datasets`` ``save_to_disk`` (its one image
  column), or ``dataset:<absolute dir>:<row>:<column>`` when the column cannot be told from the features.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from tuneforge.data.images.builtin import BUILTIN_IMAGE_SETS, builtin_name, builtin_records, open_builtin
from tuneforge.data.images.datasets_dir import dataset_records, is_datasets_dir, open_dataset
from tuneforge.data.images.opening import open_file
from tuneforge.data.images.records import folder_records, table_records
from tuneforge.errors import DataError
from tuneforge.registry import closest


def read_image_records(source: str, key: str, image_column: str = "image", label_column: str = "label") -> pd.DataFrame:
    """The labelled images of `source` (the value of config key `key`): a DataFrame with the columns `image`
    (a ref, see this module's doc) and `label` (a str), indexed by row number 0..n-1.

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
        name = builtin_name(source)
        if name is None:
            available = ["builtin:" + n for n in BUILTIN_IMAGE_SETS]
            raise DataError(
                f"{key}: unknown builtin image set '{source}'{closest(source, available)}; "
                f"available: {', '.join(available)}"
            )
        df = builtin_records(name)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"{key}: file or directory not found: {source}")
        if is_datasets_dir(path):
            df = dataset_records(path, image_column, label_column)
        elif path.is_dir():
            df = folder_records(path, source)
        else:
            df = table_records(path, source, key, image_column, label_column)
    if len(df) == 0:
        raise DataError(f"{source}: contains no images")
    return df.reset_index(drop=True)


def open_image(ref: str) -> Image.Image:
    """The image of `ref`, fully loaded, in RGB mode. An unreadable, corrupt or truncated image is a DataError
    'cannot read image <path>: <reason>'."""
    ref = str(ref)
    if ref.startswith("builtin:"):
        return open_builtin(ref)
    if ref.startswith("dataset:"):
        return open_dataset(ref)
    return open_file(ref)
