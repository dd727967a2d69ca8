"""How an image becomes model input (`Preprocessing`): size, resize/crop, rescale and normalisation, read from
and written to a transformers preprocessor_config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

from PIL import Image

from tuneforge.errors import ConfigError, first_line
from tuneforge.registry import closest

PREPROCESSOR_CONFIG = "preprocessor_config.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
