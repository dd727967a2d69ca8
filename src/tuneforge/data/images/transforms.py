"""PIL image -> model input tensor: the evaluation transform (resize, crop, normalise) and the training transform
(random resized crop, flip, RandAugment).

All randomness of the augmentations and of CutMix/MixUp comes from torch's generator: CutMix/MixUp draw from the
global one in the training step (whose state a checkpoint saves), and the image task runs each training image's
transform under `seeded_draw`, seeded by (seed, epoch, row) through `EpochIndexSampler` (both in
tuneforge.data.sampling), so a resumed run draws the same crops, flips and mixes as the uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from tuneforge.data.images.opening import to_rgb
from tuneforge.data.images.preprocessing import RESAMPLE, Preprocessing
from tuneforge.data.images.randaugment import RANDAUGMENT_MAX_MAGNITUDE, rand_augment
from tuneforge.errors import ConfigError


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
            im = to_rgb(im)
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
            im = to_rgb(im)
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
