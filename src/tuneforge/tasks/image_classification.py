"""Image classification on AutoModelForImageClassification: transformers image models (ViT, ResNet,
MobileNetV2, ...), the builtin offline ImageNet models (`builtin:mobilenet-v2`, `builtin:efficientnet-lite0`)
and timm checkpoints through transformers' timm wrapper.

The text classifier's reading and splitting (`ClassificationTask.read_split`: stratified test/validation
splits, label checks) is reused; what differs is the record (an image reference and a label), the model input
(pixel values from `data/images.py`'s transforms, decoded lazily so augmentation differs every epoch), the loss
(soft targets under CutMix/MixUp) and how a finished run is fed (image files or bytes)."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from tuneforge.config.schema import DataSection, RunConfig, Section, TaskConfig
from tuneforge.data.splits import data_seed
from tuneforge.errors import ConfigError, DataError, first_line
from tuneforge.tasks.base import TASKS, Prepared
from tuneforge.tasks.classification import ClassificationState, ClassificationTask, Frames
from tuneforge.tasks.classification_hooks import ClassifierExports, ClassifierInference

if TYPE_CHECKING:
    from tuneforge.data.images import Preprocessing

log = logging.getLogger("tuneforge")
#: most misclassified test images shown in the report's grid
GRID_IMAGES = 16


class MixSection(Section):
    alpha: float = Field(1.0, gt=0.0, description="Beta(alpha, alpha) concentration of the mixing weight lambda.")
    prob: float = Field(1.0, ge=0.0, le=1.0, description="Chance that a training batch is mixed.")


class RandAugmentSection(Section):
    num_ops: int = Field(2, ge=1, le=10, description="Operations applied to each training image.")
    magnitude: int = Field(9, ge=0, le=30, description="Strength of every operation, 0 to 30.")


class ImageAugmentSection(Section):
    random_resized_crop: list[float] | None = Field(
        [0.35, 1.0],
        description=(
            "Random resized crop of training images: the [min, max] fraction of the image area a crop keeps. Null: "
            "no random crop (training images are resized like evaluation images)."
        ),
    )
    flip: bool = Field(True, description="Flip training images horizontally at random (off for digits, text, ...).")
    randaugment: RandAugmentSection | None = Field(
        None, description=("RandAugment on training images ({num_ops, magnitude}); null: off.")
    )

    @field_validator("random_resized_crop")
    @classmethod
    def _scale(cls, v):
        if v is not None and (len(v) != 2 or not 0.0 < v[0] <= v[1] <= 1.0):
            raise ValueError(f"give [min, max] with 0 < min <= max <= 1, got {v}")
        return v


class ImageData(DataSection):
    """`data:` keys of image classification runs."""

    # the common description (the web UI shows the common data keys once, for every task); images' own default
    train: str = Field("builtin:digits", description=DataSection.model_fields["train"].description)
    image_column: str = Field("image", description="Column holding the image path (tables and `datasets` dirs).")
    label_column: str = Field("label", description="Column holding the label (strings or integers).")
    limit_per_class: int | None = Field(
        None,
        ge=1,
        description=(
            "Keep at most this many training images per class (a seeded sample): a low-resource set is one setting."
        ),
    )
    eval_limit_per_class: int | None = Field(
        None, ge=1, description=("Keep at most this many validation and test images per class (quicker evaluation).")
    )
    image_size: int | None = Field(
        None,
        ge=8,
        le=2048,
        description=(
            "Side of the square model input in pixels. Default: the model's own (its preprocessor_config.json)."
        ),
    )
    augment: ImageAugmentSection = Field(
        default_factory=ImageAugmentSection,
        description=("Per-image augmentation of the training split (validation and test are only resized)."),
    )
    cutmix: MixSection | None = Field(
        None,
        description=(
            "CutMix on training batches ({alpha, prob}): a box of each image is replaced by its neighbour's, and the "
            "target mixes both labels by area. Null: off."
        ),
    )
    mixup: MixSection | None = Field(
        None,
        description=(
            "MixUp on training batches ({alpha, prob}): images and labels blended with weight lambda ~ "
            "Beta(alpha, alpha). With cutmix too, each batch uses one of them. Null: off."
        ),
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing of the training targets.")


class ImageClassificationConfig(TaskConfig):
    type: Literal["image_classification"] = "image_classification"
    labels: list[str] | None = Field(
        None,
        description=(
            "The label names in id order. Default: inferred from the training data (sorted; numbers numerically)."
        ),
    )


class ImageRows:
    """A split as a torch-style dataset: row i is the image `refs[i]` decoded and transformed now, with its label
    id. Training rows (`seed` set) take indices `epoch * len + i` from `EpochIndexSampler` and draw row i's random
    augmentation from a generator seeded by (seed, epoch, i): different every epoch, identical after a resume."""

    def __init__(self, refs: list[str], labels: list[int], transform, seed: int | None = None):
        self.refs, self.labels, self.transform, self.seed = list(refs), list(labels), transform, seed

    def __len__(self) -> int:
        return len(self.refs)

    def __iter__(self):
        return (self[i] for i in range(len(self.refs)))

    def __getitem__(self, k: int) -> dict:
        from tuneforge.data.images import open_image
        from tuneforge.data.sampling import seeded_draw

        if not 0 <= k < (len(self.refs) if self.seed is None else 2**62):
            raise IndexError(k)
        i = k % len(self.refs)
        image = open_image(self.refs[i])
        if self.seed is None:
            return {"pixel_values": self.transform(image), "labels": self.labels[i]}
        return {"pixel_values": seeded_draw(lambda: self.transform(image), self.seed, k), "labels": self.labels[i]}


def _stack(rows: list[dict]) -> dict:
    import torch

    batch = {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}
    if rows and rows[0].get("labels") is not None:
        batch["labels"] = torch.tensor([int(r["labels"]) for r in rows], dtype=torch.long)
    return batch


def _decode(item, i: int):
    """An input to predict: a path, raw image bytes, or a PIL image -> (PIL RGB image, its name)."""
    from PIL import Image, UnidentifiedImageError

    from tuneforge.data.images import open_image

    if isinstance(item, Image.Image):
        return item.convert("RGB"), f"image {i}"
    if isinstance(item, (bytes, bytearray)):
        try:
            img = Image.open(io.BytesIO(item))
            img.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"image {i} ({len(item)} bytes) is not a readable image: {first_line(exc, 160)}") from None
        return img.convert("RGB"), f"image {i}"
    return open_image(str(item)), str(item)


@dataclass(kw_only=True)
class ImageState(ClassificationState):
    """The classifier's state, with the image preprocessing the model trains with (saved beside it)."""

    preprocessing: Preprocessing
    teacher_order: list[int] | None = None  # the teacher's index of each label, once `distill` attached one


class ImageInference(ClassifierInference):
    """Image files, raw bytes or PIL images in; label and per-class probabilities out."""

    input_kind = "image"

    def load_processor(self, path: str, trust_remote_code: bool = False) -> Preprocessing:
        """The model's image preprocessing (size, resize/crop, normalisation) from its preprocessor_config.json."""
        from tuneforge.data.images import Preprocessing

        return Preprocessing.from_dir(path)

    def head_kwargs(self, meta: dict) -> dict:
        # the base's own head (ImageNet's 1000 classes) gives way to one sized to the run's labels
        kwargs = super().head_kwargs(meta)
        return {**kwargs, "ignore_mismatched_sizes": True} if kwargs else kwargs

    def logits(self, run: Any, images: list, pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Logits for `images` (paths, bytes or PIL images) in input order."""
        import torch

        from tuneforge.data.images import eval_transform

        transform = eval_transform(run.tokenizer)
        width = len(run.meta["labels"])
        out = np.zeros((len(images), width), dtype=np.float32)
        first = next(run.model.parameters())
        device, dtype = first.device, (first.dtype if first.is_floating_point() else torch.float32)
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                chunk = [transform(_decode(x, s + k)[0]) for k, x in enumerate(images[s : s + batch_size])]
                out[s : s + len(chunk)] = (
                    run.model(pixel_values=torch.stack(chunk).to(device, dtype)).logits.float().cpu().numpy()
                )
        return out

    def predict(self, run: Any, images: list, batch_size: int = 64) -> list[dict]:
        """Label and per-class probabilities for each image (a path, raw bytes or a PIL image)."""
        from tuneforge.evaluation.classification import softmax

        if not images:
            raise DataError("no images to predict")
        probs = softmax(self.logits(run, list(images), batch_size=batch_size))
        names = run.meta["labels"]
        return [
            {
                "image": x if isinstance(x, str) else f"image {i}",
                "label": names[int(p.argmax())],
                "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)},
            }
            for i, (x, p) in enumerate(zip(images, probs))
        ]

    def evaluate(
        self, run: Any, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
    ) -> dict:
        """Metrics, per-class report, confusion matrix and misclassified grid on labelled images (`source`: a
        folder of class folders, a table or a builtin set; `text_column` names the image column of a table)."""
        from tuneforge.data.images import check_images, read_image_records
        from tuneforge.evaluation.classification import write_classification_report

        meta = run.meta
        df = read_image_records(
            source,
            "--data",
            text_column or meta.get("image_column", "image"),
            label_column or meta.get("label_column", "label"),
        )
        if len(df) == 0:
            raise DataError(f"{source}: no images found")
        check_images(df["image"].tolist())
        names = meta["labels"]
        ids = []
        for s in df["label"].astype(str):
            if s not in names:
                raise DataError(f"{source}: label '{s}' was never seen in training (known labels: {', '.join(names)})")
            ids.append(names.index(s))
        logits = self.logits(run, df["image"].tolist())
        result = write_classification_report(
            logits, np.asarray(ids), names, out_dir, title=f"{source} ({len(df)} images)"
        )
        _misclassified_section(df["image"].tolist(), logits, np.asarray(ids), names, Path(out_dir))
        return result


class ImageExports(ClassifierExports):
    """Pixel values in (one dynamic batch axis), fixed images for the merge check, weight-only int8."""

    parity_batch_size = 16
    # convolution weights are quantized too (per output channel); activations stay fp32
    int8_scheme = "weight-only"

    def check_inputs(self, processor: Preprocessing, meta: dict, texts: list[str] | None = None) -> list[dict]:
        """Four fixed images (gradients and seeded noise) for the merge equivalence check."""
        import torch

        if texts:
            raise ConfigError("--text does not apply to an image model (its merge check uses fixed images)")
        g = torch.Generator().manual_seed(0)
        h, w = processor.height, processor.width
        ramp = torch.linspace(-2, 2, w).expand(3, h, w)
        images = [
            ramp,
            ramp.transpose(1, 2) if h == w else -ramp,
            torch.randn(3, h, w, generator=g),
            torch.rand(3, h, w, generator=g) * 4 - 2,
        ]
        return [{"pixel_values": x.unsqueeze(0).contiguous()} for x in images]

    def held_out_rows(self, split: ImageRows, n: int) -> list[dict]:
        rows = []
        for i in range(n):
            r = split[i]
            rows.append({"pixel_values": r["pixel_values"], "label": r["labels"]})
        return rows

    def batch(self, rows: list[dict], processor: Preprocessing) -> dict:
        import torch

        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}

    def output_rows(self, logits: np.ndarray, batch: dict, rows: list[dict]) -> list:
        return [logits[k] for k in range(len(rows))]

    def onnx_inputs(self, processor: Preprocessing) -> tuple[list[str], tuple, tuple]:
        import torch
        from torch.export import Dim

        example = torch.randn(2, 3, processor.height, processor.width)
        return ["pixel_values"], (example,), ({0: Dim("batch", min=1, max=1024)},)


@TASKS.register("image_classification")
class ImageClassificationTask(ClassificationTask):
    name = "image_classification"
    Config = ImageClassificationConfig
    DataConfig = ImageData
    auto_class_name = "AutoModelForImageClassification"
    aliases = ("image",)
    prepares_tables = False
    distill_keys = ()
    full_precision_modules = ("classifier",)
    inference = ImageInference()
    exports = ImageExports()

    @classmethod
    def auto_class(cls):
        from tuneforge.models.vision import ensure_registered

        ensure_registered()  # the builtin models that transformers has no class for
        return super().auto_class()

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        super().fill_defaults(cfg)
        # every image of a batch has the same size: grouping by length only costs a pass over the images
        cfg.train.group_by_length = False

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super(ClassificationTask, cls).check_config(cfg)  # not the text classifier's balance checks

    # ---- data -------------------------------------------------------------------------------------------
    def _read(self, source: str, key: str = "data.train", skipped_out: list | None = None) -> pd.DataFrame:
        from tuneforge.data.images import read_image_records

        d = self.cfg.data
        df = read_image_records(source, key, d.image_column, d.label_column)
        if len(df) == 0:
            raise DataError(f"{source}: no images found")
        df.columns = [d.image_column, d.label_column]
        return df

    def _columns(self) -> list[str]:
        return [self.cfg.data.image_column, self.cfg.data.label_column]

    def _label_names(self, train: pd.DataFrame) -> list[str]:
        from tuneforge.data.images import builtin_image_labels

        names = None if self.cfg.task.labels else builtin_image_labels(self.cfg.data.train)
        return list(names) if names else super()._label_names(train)

    def clean(self, frames: Frames) -> tuple[pd.DataFrame, dict]:
        """The training split capped at `data.limit_per_class` (validation/test at `eval_limit_per_class` in
        `read_split`). Every image file kept is opened once, so a broken file stops the run before training."""
        from tuneforge.data.images import check_images, limit_per_class

        d = self.cfg.data
        train = frames.train
        if d.limit_per_class:
            train = limit_per_class(
                train.rename(columns={d.label_column: "label"}), d.limit_per_class, data_seed(self.cfg)
            ).rename(columns={"label": d.label_column})
        check_images(train[d.image_column].tolist())
        counts = {
            s: self._counts(df)
            for s, df in (("train", train), ("validation", frames.validation), ("test", frames.test))
            if df is not None
        }
        return train, {
            "class_counts": counts,
            "limit_per_class": d.limit_per_class,
            "eval_limit_per_class": d.eval_limit_per_class,
        }

    def _counts(self, df: pd.DataFrame) -> dict[str, int]:
        return {str(k): int(v) for k, v in pd.Series(self._label_strings(df)).value_counts().sort_index().items()}

    def read_split(self) -> Frames:
        from tuneforge.data.images import check_images, limit_per_class

        frames = super().read_split()
        d = self.cfg.data
        if d.eval_limit_per_class:
            for name in ("validation", "test"):
                df = getattr(frames, name)
                if df is not None:
                    cut = limit_per_class(
                        df.rename(columns={d.label_column: "label"}), d.eval_limit_per_class, data_seed(self.cfg)
                    ).rename(columns={"label": d.label_column})
                    setattr(frames, name, cut)
        for df in (frames.validation, frames.test):  # the training images: once `clean` has capped them
            if df is not None:
                check_images(df[d.image_column].tolist())
        return frames

    def _transforms(self, processor):
        from tuneforge.data.images import eval_transform, train_transform

        a = self.cfg.data.augment
        prep = self._preprocessing(processor)
        rand = (a.randaugment.num_ops, a.randaugment.magnitude) if a.randaugment else None
        crop = tuple(a.random_resized_crop) if a.random_resized_crop else None
        return train_transform(prep, random_resized_crop=crop, flip=a.flip, randaugment=rand), eval_transform(prep)

    def _preprocessing(self, processor):
        return processor.with_size(self.cfg.data.image_size) if self.cfg.data.image_size else processor

    def _rows(self, df: pd.DataFrame | None, label2id: dict, transform, seed: int | None = None) -> ImageRows | None:
        if df is None or len(df) == 0:
            return None
        return ImageRows(
            df[self.cfg.data.image_column].tolist(), [label2id[s] for s in self._label_strings(df)], transform, seed
        )

    def prepare(self, processor) -> Prepared[ImageState]:
        """Read and split the images, cap classes, check every file opens; the pixels are decoded per batch."""
        frames, report = self.read_clean()
        label2id = frames.label2id
        train_tf, eval_tf = self._transforms(processor)
        train, val, test = frames.train, frames.validation, frames.test
        # the Trainer counts input elements as "tokens": meaningless for pixels
        efficiency = {"train_tokens": None, "train_tokens_per_second": None}
        p = self._preprocessing(processor)
        state = ImageState(frames.labels, label2id, report["class_counts"]["train"], preprocessing=p)
        return Prepared(
            train=self._rows(train, label2id, train_tf, self.cfg.train.seed),
            validation=self._rows(val, label2id, eval_tf),
            test=self._rows(test, label2id, eval_tf),
            sizes=frames.sizes,
            state=state,
            report=report,
            held_out={"validation": self._records(val), "test": self._records(test)},
            train_ids=frames.train_ids,
            efficiency=efficiency,
            info={"image_size": [p.height, p.width]},
        )

    def held_out(self, run_dir, processor):
        """The run's saved test (else validation) images, with the evaluation transform of `processor` (the
        preprocessing saved with the model)."""
        from tuneforge.data.images import eval_transform
        from tuneforge.data.splits import load_split
        from tuneforge.models.loader import read_run_metadata

        labels = list(read_run_metadata(Path(run_dir) / "model").get("labels") or [])
        for name in ("test", "validation"):
            records = load_split(run_dir, name)
            if records:
                df = pd.DataFrame.from_records(records)
                return self._rows(df, {n: i for i, n in enumerate(labels)}, eval_transform(processor)), name
        return None, "test"

    def write_data_report(self, prepared: Prepared[ImageState], out_dir: str) -> None:
        """data/report.md: images per class and split, and a grid of augmented training images."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        counts = prepared.report.get("class_counts", {})
        splits = [s for s in ("train", "validation", "test") if s in counts]
        p = prepared.state.preprocessing
        lines = [
            "# Data used by this run",
            "",
            "Images per split: " + ", ".join(f"{s} {prepared.sizes.get(s, 0)}" for s in splits),
            "",
            f"Model input: {p.height}x{p.width} pixels, mean {list(p.mean)}, std {list(p.std)}",
            "",
        ]
        d = self.cfg.data
        if d.limit_per_class:
            lines += [f"Training images capped at {d.limit_per_class} per class (data.limit_per_class).", ""]
        lines += ["| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        for name in prepared.state.labels:
            lines.append(f"| {name} | " + " | ".join(str(counts[s].get(name, 0)) for s in splits) + " |")
        if self._grid(
            prepared.train,
            min(16, len(prepared.train)),
            out / "train_samples.png",
            [prepared.state.labels[y] for y in prepared.train.labels[:16]],
        ):
            lines += [
                "",
                "## Training images as the model sees them (augmented)",
                "",
                "![augmented training images](train_samples.png)",
            ]
        (out / "report.md").write_text("\n".join(lines) + "\n")
        (out / "report.json").write_text(json.dumps({"sizes": prepared.sizes, **prepared.report}, indent=2))

    def _grid(self, rows: ImageRows, n: int, path: Path, titles: list[str]) -> bool:
        """A grid of the first `n` rows as the model sees them (un-normalised for display)."""
        if n == 0:
            return False
        return _save_grid([rows[i]["pixel_values"] for i in range(n)], titles, path)

    # ---- distillation -----------------------------------------------------------------------------------
    def distill(self, prepared: Prepared[ImageState], processor, teacher, cache_dir) -> Prepared:
        """A teacher image classifier (a finished run or a model directory with the same classes) teaches on the
        very batches the student sees (augmented, CutMix/MixUp-mixed), converted to its own input size and
        normalisation: function matching, so nothing is cached."""
        labels = prepared.state.labels
        if set(teacher.labels) != set(labels):
            raise DataError(
                f"distill.teacher: its labels {teacher.labels[:10]} differ from the data's "
                f"{labels[:10]} (a teacher must predict the same classes)"
            )
        prepared.state.teacher_order = [teacher.labels.index(n) for n in labels]
        prepared.teacher = teacher
        teacher.model.eval()
        return prepared

    def _teacher_logits(self, prepared: Prepared[ImageState], pixels):
        """The teacher's logits (in the student's label order) for a batch of the student's pixel values."""
        import torch
        import torch.nn.functional as F

        teacher, mine = prepared.teacher, prepared.state.preprocessing
        theirs = teacher.tokenizer
        first = next(teacher.model.parameters())
        x = pixels.to(first.device, torch.float32)
        if tuple(mine.mean) != tuple(theirs.mean) or tuple(mine.std) != tuple(theirs.std):
            m0, s0 = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mine.mean, mine.std))
            m1, s1 = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (theirs.mean, theirs.std))
            x = (x * s0 + m0 - m1) / s1
        if (x.shape[-2], x.shape[-1]) != (theirs.height, theirs.width):
            x = F.interpolate(
                x, size=(theirs.height, theirs.width), mode="bilinear", align_corners=False, antialias=True
            )
        with torch.no_grad():
            out = teacher.model(pixel_values=x.to(first.dtype)).logits.float()
        return out[:, prepared.state.teacher_order]

    # ---- training ---------------------------------------------------------------------------------------
    def train_sampler(self, prepared: Prepared[ImageState]):
        """Each epoch's order and each row's augmentation seeded by (train.seed, epoch): see ImageRows."""
        from tuneforge.data.sampling import EpochIndexSampler

        return EpochIndexSampler(len(prepared.train), self.cfg.train.seed)

    def model_kwargs(self, prepared: Prepared[ImageState]) -> dict:
        # a pretrained ImageNet head (1000 classes) is replaced by a new one sized to the labels
        return {
            **self.inference.head_kwargs({"labels": prepared.state.labels}),
            "problem_type": "single_label_classification",
        }

    def prepare_model(self, model):
        """Refuses `data.image_size` for a model with fixed-size position embeddings (ViT).
        BatchNorm layers ported from TensorFlow with its momentum convention (0.997 = keep 99.7% of the running
        statistics; transformers' MobileNetV1/V2) would, read as PyTorch's momentum, replace the pretrained
        statistics by the last batch's: they get PyTorch's default 0.1."""
        import inspect

        import torch

        side = self.cfg.data.image_size
        native = getattr(model.config, "image_size", None)
        if (
            side
            and native
            and side != native
            and "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        ):
            raise ConfigError(
                f"data.image_size: {self.cfg.model.name} has position embeddings for {native}x{native} "
                f"inputs (a vision transformer); remove data.image_size or set it to {native}"
            )
        fixed = 0
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.momentum is not None and m.momentum > 0.5:
                m.momentum = 0.1
                fixed += 1
        if fixed:
            log.info("set the momentum of %d BatchNorm layers with TensorFlow's convention to 0.1", fixed)
        return model

    def collator(self, processor):
        return _stack

    def loss_function(self, prepared: Prepared):
        return None

    def training_loss(self, prepared: Prepared[ImageState]):
        """Cross-entropy on the model's logits; in training, batches mixed by CutMix/MixUp first (soft targets)
        and label smoothing; evaluation batches are never mixed."""
        import torch

        from tuneforge.data.images import mix_batch
        from tuneforge.kernels.soft_ce import soft_cross_entropy

        d, kd = self.cfg.data, self.cfg.distill
        cutmix = (d.cutmix.alpha, d.cutmix.prob) if d.cutmix else None
        mixup = (d.mixup.alpha, d.mixup.prob) if d.mixup else None
        n = len(prepared.state.labels)
        smoothing = d.label_smoothing
        teach = prepared.teacher is not None

        def loss(model, inputs: dict):
            pixels, labels = inputs["pixel_values"], inputs["labels"]
            if model.training and (cutmix or mixup or smoothing):
                pixels, targets = mix_batch(pixels, labels, n, cutmix, mixup, label_smoothing=smoothing)
            else:
                targets = labels
            dtype = next(model.parameters()).dtype
            outputs = model(pixel_values=pixels.to(dtype))
            logits = outputs.logits.float()
            value = soft_cross_entropy(logits, targets.to(logits.device))
            if teach and model.training:  # Hinton's loss: alpha T^2 KL(teacher || student) + (1 - alpha) CE
                t = kd.temperature
                teacher = self._teacher_logits(prepared, pixels).to(logits.device)
                kl = torch.nn.functional.kl_div(
                    torch.log_softmax(logits / t, -1),
                    torch.log_softmax(teacher / t, -1),
                    reduction="batchmean",
                    log_target=True,
                )
                value = kd.alpha * t * t * kl + (1.0 - kd.alpha) * value
            return value, outputs

        return loss

    def final_evaluation(
        self, trainer, prepared: Prepared[ImageState], eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        """Metrics, per-class report and confusion matrix on the test split, and a grid of misclassified test
        images (eval/misclassified.png) in the report."""
        from tuneforge.evaluation.classification import write_classification_report

        outputs = self.test_outputs(trainer, prepared)
        if outputs is None:
            return {"validation": val_metrics}
        logits, labels = outputs
        test = write_classification_report(
            logits,
            labels,
            prepared.state.labels,
            eval_dir,
            title=f"Test split ({len(prepared.test)} images)",
            extra={"validation": val_metrics},
        )
        _misclassified_section(prepared.test.refs, logits, labels, prepared.state.labels, Path(eval_dir))
        result = {"validation": val_metrics, "test": test}
        if prepared.teacher is not None:
            result["distill"] = self._teacher_vs_student(trainer, prepared, test, logits, eval_dir)
        return result

    def _teacher_vs_student(
        self, trainer, prepared: Prepared[ImageState], student_metrics: dict, student_logits, eval_dir
    ) -> dict:
        """The teacher-vs-student table on the test images (quality, size, CPU speed, agreement)."""
        from tuneforge.data.images import eval_transform
        from tuneforge.evaluation.classification import classification_metrics
        from tuneforge.tasks import distill_report as dr

        teacher, test = prepared.teacher, prepared.test
        t_logits = teacher.logits(test.refs)[:, prepared.state.teacher_order]
        t_metrics = classification_metrics(t_logits, np.asarray(test.labels))
        t_rows = ImageRows(test.refs, test.labels, eval_transform(teacher.tokenizer))
        rows = dr.classifier_rows(
            teacher,
            t_metrics,
            t_rows,
            _stack,
            trainer.model,
            student_metrics,
            test,
            _stack,
            Path(eval_dir).parent / "model",
        )
        return dr.write_section(eval_dir, *rows, dr.agreement(student_logits, t_logits), "test", dr.KEYS)

    def metadata(self, prepared: Prepared[ImageState]) -> dict:
        d = self.cfg.data
        return {
            "labels": prepared.state.labels,
            "image_column": d.image_column,
            "label_column": d.label_column,
            "input_kind": "image",
            "preprocessing": prepared.state.preprocessing.to_dict(),
        }

    def save_extras(self, model_dir: str, prepared: Prepared[ImageState]) -> None:
        # the preprocessing the model was trained with (data.image_size may differ from the base model's)
        prepared.state.preprocessing.save_pretrained(model_dir)


def _misclassified_section(
    refs: list[str], logits: np.ndarray, labels: np.ndarray, names: list[str], out_dir: Path
) -> None:
    """Save a grid of up to GRID_IMAGES misclassified images (the most confident mistakes first) and add it to
    out_dir/report.md."""
    from tuneforge.data.images import open_image
    from tuneforge.evaluation.classification import softmax

    probs = softmax(logits)
    pred = probs.argmax(-1)
    wrong = np.flatnonzero(pred != labels)
    report = out_dir / "report.md"
    if len(wrong) == 0:
        with report.open("a") as f:
            f.write("\n## Misclassified images\n\nNone: every image was classified correctly.\n")
        return
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:GRID_IMAGES]
    images = [open_image(refs[i]) for i in order]
    titles = [f"{names[labels[i]]} -> {names[pred[i]]} ({probs[i, pred[i]]:.2f})" for i in order]
    if _save_grid(images, titles, out_dir / "misclassified.png"):
        with report.open("a") as f:
            f.write(
                f"\n## Misclassified images\n\n{len(wrong)} of {len(labels)} images are misclassified; the "
                f"{len(order)} most confident mistakes (true -> predicted (probability)):\n\n"
                f"![misclassified images](misclassified.png)\n"
            )


def _save_grid(images: list[Any], titles: list[str], path: Path) -> bool:
    """A titled grid of PIL images or normalised [3, H, W] tensors (shown min-max scaled) as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n = len(images)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        if hasattr(img, "permute"):
            arr = img.permute(1, 2, 0).float().numpy()
            arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-8)
        else:
            arr = np.asarray(img)
        ax.imshow(arr, interpolation="nearest")
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
