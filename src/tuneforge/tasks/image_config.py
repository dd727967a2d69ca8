"""The configuration keys of image classification runs: its `data:` keys (columns, per-class caps, input size,
per-image augmentation, CutMix/MixUp, label smoothing) and its `task:` keys."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tuneforge.config.schema import DataSection, Section, TaskConfig


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
