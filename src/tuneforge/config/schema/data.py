"""The `data` section: the keys every task reads (DataSection, which each task extends with its own) and the
sections that tasks' data configs use (split, cleaning, augmentation with back-translation, class balance)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tuneforge.config.schema.base import Section, seed_field


class SplitSection(Section):
    validation: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description=("Fraction of the data held out for validation when no `data.validation` file is given."),
    )
    test: float = Field(
        0.1, ge=0.0, lt=1.0, description=("Fraction held out for the final test when no `data.test` file is given.")
    )
    stratify: bool = Field(True, description="Keep class proportions equal across splits (classification).")
    group_column: str | None = Field(
        None,
        description=(
            "Keep rows sharing this column's value in one split (for example `movie_name`), so near-identical "
            "texts cannot leak from train into test."
        ),
    )
    seed: int | None = seed_field(None, "Seed of the split; defaults to `train.seed`.")

    @model_validator(mode="after")
    def _sizes(self):
        if self.validation + self.test >= 0.9:
            raise ValueError("split.validation + split.test must leave at least 10% for training")
        return self


class CleanSection(Section):
    dedup: Literal["none", "exact", "near"] = Field(
        "near",
        description=(
            "How duplicates are found: `exact` (after NFKC, case and whitespace normalisation), `near` (exact plus "
            "MinHash/LSH near-duplicates above `near_threshold`), or `none`. Applies within train and across splits."
        ),
    )
    near_threshold: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description=("Jaccard similarity of character 4-gram shingles above which two texts count as near-duplicates."),
    )
    within_train: Literal["drop", "report"] = Field(
        "drop",
        description=(
            "Duplicates inside the training split: `drop` keeps the first of each group (per label), `report` "
            "only counts them."
        ),
    )
    cross_split: Literal["drop", "report", "none"] = Field(
        "drop",
        description=(
            "Training rows that duplicate a validation or test row (leakage): `drop` removes them from train, "
            "`report` only lists them. Validation and test are never changed."
        ),
    )
    conflicts: Literal["report", "drop", "majority"] = Field(
        "report",
        description=(
            "Duplicate groups in train whose labels disagree: `report` keeps one row per label, `drop` removes the "
            "whole group, `majority` keeps one row with the most frequent label (ties are dropped)."
        ),
    )
    label_noise: Literal["none", "report", "drop", "relabel"] = Field(
        "report",
        description=(
            "Label-error detection on train (confident learning on out-of-fold probabilities of the detector "
            "`noise_features`): `report` lists suspects, `drop` removes them, `relabel` gives them the predicted label."
        ),
    )
    noise_features: Literal["tfidf", "model", "both", "finetune"] = Field(
        "tfidf",
        description=(
            "The label-noise detector: a logistic regression on `tfidf` (word or character n-grams; seconds), on "
            "`model` (mean-pooled sentence embeddings of `model.name`, frozen; a forward pass over the training "
            "split, better on paraphrased or short texts) or `both` (the two models' probabilities averaged: fewer "
            "false suspects at about the same recall, at the cost of `model`); or `finetune`: the run's own model, "
            "method and training settings fine-tuned once per fold (`noise_folds` extra trainings: the most "
            "accurate detector and by far the slowest)."
        ),
    )
    noise_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description=(
            "`drop`/`relabel` act only on suspects whose out-of-fold probability for the suggested label is at "
            "least this."
        ),
    )
    noise_folds: int = Field(5, ge=2, le=20, description="Cross-validation folds for the out-of-fold probabilities.")


class BackTranslationSection(Section):
    to_model: str | None = Field(
        None,
        description=(
            "Local seq2seq translation model directory (source language -> pivot), e.g. a Marian en-de model."
        ),
    )
    back_model: str | None = Field(None, description="Local seq2seq model directory (pivot -> source language).")
    batch_size: int = Field(16, ge=1, description="Texts per translation batch.")
    max_length: int = Field(256, ge=8, description="Longest generated translation, in tokens.")
    num_beams: int = Field(1, ge=1, description="Beam width (1 = greedy, fastest).")
    sample: bool = Field(
        False, description="Sample (top-k 50) instead of greedy/beam search, for more varied paraphrases."
    )


class AugmentSection(Section):
    enabled: bool = Field(
        False, description="Add augmented copies of training examples (validation and test are never augmented)."
    )
    num_per_example: float = Field(
        1.0,
        ge=0.0,
        le=32.0,
        description=(
            "Augmented copies per training example; a fraction adds a copy to that share of examples (1.5: every "
            "example gets one, half get two)."
        ),
    )
    per_class: dict[str, float] | None = Field(
        None,
        description=("Copies per example for the named labels, overriding `num_per_example` (to top up rare classes)."),
    )
    ops: list[Literal["synonym", "insert", "swap", "delete", "back_translation"]] = Field(
        default_factory=lambda: ["synonym", "insert", "swap", "delete"],
        description=(
            "Operations; each copy uses one, chosen at random. `back_translation` needs "
            "`augment.back_translation.to_model` and `back_model`."
        ),
    )
    synonym_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of words replaced by a synonym (WordNet / Cilin)."
    )
    insert_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of words for which a synonym is inserted at a random place."
    )
    swap_rate: float = Field(0.1, ge=0.0, le=1.0, description="Share of words swapped with another word.")
    delete_rate: float = Field(0.1, ge=0.0, le=1.0, description="Probability of deleting each word.")
    language: Literal["auto", "en", "zh"] = Field(
        "auto",
        description=(
            "Language of the texts: `auto` detects it per example from the script (Han characters: zh, else en)."
        ),
    )
    protect: list[str] = Field(default_factory=list, description="Words that are never replaced, moved or deleted.")
    protect_entities: bool = Field(
        True, description=("Never change numbers or capitalised words inside a sentence (likely names and entities).")
    )
    protect_negations: bool = Field(
        True,
        description=(
            "Never change, move or delete negations (not, never, isn't, 不, 没有, ...): losing one can flip the label."
        ),
    )
    synonym_senses: int = Field(
        2,
        ge=0,
        description=(
            "English synonyms come from this many most frequent WordNet senses of a word per part of speech; 0 takes "
            "every sense (the EDA paper's choice, which also gives rare ones such as great -> 'with child')."
        ),
    )
    seed: int | None = seed_field(None, "Seed of the augmentation; defaults to `train.seed`.")
    back_translation: BackTranslationSection = Field(
        default_factory=BackTranslationSection, description="Back-translation through local translation models."
    )

    @model_validator(mode="after")
    def _ops(self):
        if self.enabled and not self.ops:
            raise ValueError(
                "data.augment.ops is empty: list at least one of synonym, insert, swap, delete, back_translation"
            )
        bt = self.back_translation
        if "back_translation" in self.ops and self.enabled and not (bt.to_model and bt.back_model):
            raise ValueError(
                "data.augment.ops includes back_translation, but no translation models are configured: "
                "set data.augment.back_translation.to_model and back_model to local seq2seq model directories"
            )
        return self


class BalanceSection(Section):
    class_weights: Literal["none", "balanced"] | dict[str, float] = Field(
        "none",
        description=(
            "Class-weighted loss: `balanced` (inverse class frequency in the final training split), a mapping "
            "label -> weight, or `none`."
        ),
    )
    sampling: Literal["none", "oversample", "undersample", "augment"] = Field(
        "none",
        description=(
            "Resample the training split: `oversample` repeats rare-class rows, `undersample` drops frequent-class "
            "rows, `augment` tops up rare classes with augmented copies (data.augment's operations and rates)."
        ),
    )

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights(cls, v):
        if isinstance(v, str) and v not in ("none", "balanced"):
            raise ValueError("must be 'none', 'balanced' or a mapping label -> weight")
        if isinstance(v, dict) and any(not isinstance(w, (int, float)) or w <= 0 for w in v.values()):
            raise ValueError("every class weight must be a positive number")
        return v

    ratio: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "Target size of every class relative to the largest (over/augment) or the floor relative to the smallest "
            "(undersample keeps at most smallest/ratio rows per class)."
        ),
    )


class DataSection(Section):
    """The data keys every task reads. Each task extends this class with its own keys (its `DataConfig`), and
    the `data:` section of a config is validated against the class of its `task.type`."""

    train: str = Field(
        "builtin:rotten-tomatoes",
        description=(
            "Training data: a csv/tsv/json/jsonl/parquet file, a directory saved by `datasets`, or a builtin "
            "data set (`builtin:rotten-tomatoes`; images: a folder of class folders, or `builtin:fashion-mnist`, "
            "`builtin:digits`). Without `validation`/`test` files it is split."
        ),
    )
    validation: str | None = Field(None, description="Optional validation file (same columns as train).")
    test: str | None = Field(None, description="Optional test file (same columns as train).")
    text_column: str = Field("text", description="Column holding the input text.")
    max_length: int | None = Field(
        None,
        ge=8,
        le=131072,
        description=(
            "Longest example in tokens (the cutoff length); longer ones are truncated. Default: the task's "
            "(128 for classification). Batches are padded only to their own longest example, never to this length."
        ),
    )
    max_train_samples: int | None = Field(
        None, ge=1, description=("Use only this many training rows (a stratified sample), for quick experiments.")
    )
    bad_records: Literal["error", "skip"] = Field(
        "error",
        description=(
            "A record that cannot be used (SFT: a turn that is empty, missing or not text, an unknown role, no "
            "assistant turn; classification: a label that is a list, a text that is a list or bytes that are not "
            "UTF-8): `error` stops with a message naming the record, `skip` leaves such records out, counts them in "
            "the log and lists them in the run's data/report.md. Unreadable files are errors either way."
        ),
    )
    split: SplitSection = Field(default_factory=SplitSection, description="How to split when files are not given.")
