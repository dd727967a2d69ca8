"""Opening image files with Pillow: fully loaded in RGB mode, or only verified (cheap); any failure is a one-line
DataError 'cannot read image <path>: <reason>'."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tuneforge.errors import DataError, first_line


def image_reason(exc: BaseException) -> str:
    """Why Pillow could not read an image, in one line for a 'cannot read image <path>: <reason>' message."""
    if isinstance(exc, Image.UnidentifiedImageError):  # its message repeats the path
        return "not an image file (or in a format Pillow cannot read)"
    return first_line(exc, 300, whole=True)


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` in RGB mode (`im` itself when it already is)."""
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


def open_file(path: str) -> Image.Image:
    """The image file at `path`, fully loaded, in RGB mode. An unreadable, corrupt or truncated image is a
    DataError 'cannot read image <path>: <reason>'."""
    try:
        with Image.open(path) as im:
            im.load()
            out = to_rgb(im)
            if out is im:
                out = im.copy()
        return out
    except FileNotFoundError:
        raise DataError(f"cannot read image {path}: file not found") from None
    except Exception as exc:
        raise DataError(f"cannot read image {path}: {image_reason(exc)}") from None


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
            raise DataError(f"cannot read image {ref}: {image_reason(exc)}") from None
