"""RandAugment (Cubuk et al., 2020) on PIL images: its ops and drawing `num_ops` of them at one magnitude.

Each op maps (image, signed magnitude in [-1, 1]) to an image. The magnitude's sign is drawn at random for the ops
whose direction is arbitrary; the others use its absolute value."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image, ImageEnhance, ImageOps

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
