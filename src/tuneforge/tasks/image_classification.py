"""Image classification on AutoModelForImageClassification: transformers image models (ViT, ResNet,
MobileNetV2, ...), the builtin offline ImageNet models (`builtin:mobilenet-v2`, `builtin:efficientnet-lite0`)
and timm checkpoints through transformers' timm wrapper.

The text classifier's reading and splitting (`ClassificationTask.read_split`: stratified test/validation
splits, label checks) is reused; what differs is the record (an image reference and a label), the model input
(pixel values from the transforms of the `data/images/` package, decoded lazily so augmentation differs every
epoch), the loss (soft targets under CutMix/MixUp) and how a finished run is fed (image files or bytes). Beside
this module: image_config.py (its `data:` and `task:` keys), image_hooks.py (a finished run), image_distill.py
(a teacher) and image_report.py (the data report and image grids)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tuneforge.config.schema import RunConfig
from tuneforge.data.left_out import ReadLog
from tuneforge.data.splits import data_seed
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.base import TASKS, Prepared
from tuneforge.tasks.classification import ClassificationState, ClassificationTask, Frames
from tuneforge.tasks.image_config import ImageClassificationConfig, ImageData
from tuneforge.tasks.image_hooks import ImageExports, ImageInference

if TYPE_CHECKING:
    from tuneforge.data.images import Preprocessing

log = logging.getLogger("tuneforge")


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


def stack_batch(rows: list[dict]) -> dict:
    """Rows of `ImageRows` as one batch: their pixel values stacked, with the label ids when they have them."""
    import torch

    batch = {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}
    if rows and rows[0].get("labels") is not None:
        batch["labels"] = torch.tensor([int(r["labels"]) for r in rows], dtype=torch.long)
    return batch


@dataclass(kw_only=True)
class ImageState(ClassificationState):
    """The classifier's state, with the image preprocessing the model trains with (saved beside it)."""

    preprocessing: Preprocessing
    teacher_order: list[int] | None = None  # the teacher's index of each label, once `distill` attached one


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

    def _read(self, source: str, key: str = "data.train", read_log: ReadLog | None = None) -> pd.DataFrame:
        """The labelled images of `source`: a missing image or label is a DataError naming its row (never left out),
        so `read_log` has nothing to record."""
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
        from tuneforge.data.images import check_images

        d = self.cfg.data
        train = frames.train
        if d.limit_per_class:
            train = self._cap(train, d.limit_per_class)
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

    def _cap(self, df: pd.DataFrame, n: int) -> pd.DataFrame:
        """At most `n` rows per class (a sample seeded by the data seed)."""
        from tuneforge.data.images import limit_per_class

        label = self.cfg.data.label_column
        cut = limit_per_class(df.rename(columns={label: "label"}), n, data_seed(self.cfg))
        return cut.rename(columns={"label": label})

    def _counts(self, df: pd.DataFrame) -> dict[str, int]:
        return {str(k): int(v) for k, v in pd.Series(self._label_strings(df)).value_counts().sort_index().items()}

    def read_split(self) -> Frames:
        from tuneforge.data.images import check_images

        frames = super().read_split()
        d = self.cfg.data
        if d.eval_limit_per_class:
            for name in ("validation", "test"):
                df = getattr(frames, name)
                if df is not None:
                    setattr(frames, name, self._cap(df, d.eval_limit_per_class))
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
        from tuneforge.tasks.image_report import write_data_report

        write_data_report(prepared, out_dir, self.cfg.data.limit_per_class)

    def distill(self, prepared: Prepared[ImageState], processor, teacher, cache_dir) -> Prepared:
        """A teacher image classifier (a finished run or a model directory with the same classes) teaches on the
        very batches the student sees (tasks/image_distill.py): nothing is cached."""
        from tuneforge.tasks.image_distill import distill

        return distill(prepared, teacher)

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
        return stack_batch

    def loss_function(self, prepared: Prepared):
        return None

    def training_loss(self, prepared: Prepared[ImageState], without_adapters=None):
        """Cross-entropy on the model's logits; in training, batches mixed by CutMix/MixUp first (soft targets)
        and label smoothing; evaluation batches are never mixed. With a teacher, Hinton's loss on top
        (tasks/image_distill.py)."""
        from tuneforge.data.images import mix_batch
        from tuneforge.kernels.soft_ce import soft_cross_entropy
        from tuneforge.tasks.image_distill import hinton_loss, teacher_logits

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
            if teach and model.training:
                value = hinton_loss(logits, teacher_logits(prepared, pixels), labels, value, kd.temperature, kd.alpha)
            return value, outputs

        return loss

    def final_evaluation(
        self, trainer, prepared: Prepared[ImageState], eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        """Metrics, per-class report and confusion matrix on the test split, and a grid of misclassified test
        images (eval/misclassified.png) in the report."""
        from tuneforge.evaluation.classification import write_classification_report
        from tuneforge.tasks.image_report import misclassified_section

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
        misclassified_section(prepared.test.refs, logits, labels, prepared.state.labels, Path(eval_dir))
        result = {"validation": val_metrics, "test": test}
        if prepared.teacher is not None:
            from tuneforge.tasks.image_distill import teacher_vs_student

            result["distill"] = teacher_vs_student(trainer, prepared, test, logits, eval_dir)
        return result

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
