"""The training-data pipeline run after the splits are made: deduplicate, find label noise, augment, resample.

Only the training split is changed; validation and test are read for leakage checks and reporting only. Every
step records what it did, so the run directory's data/report.md can show counts before and after.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuneforge.data.text import detect_language

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

log = logging.getLogger("tuneforge")

#: column added to augmented rows (None for original rows): which operation made them
AUGMENT_COLUMN = "augmentation"
EXAMPLES = 20


def label_strings(values: Sequence) -> list[str]:
    """Labels as strings, with integral floats (1.0, as pandas reads ints with gaps) written as integers."""
    out = []
    for v in values:
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return out


def split_summary(df: pd.DataFrame | None, text_col: str, label_col: str) -> dict | None:
    """Rows, class counts, language mix and character lengths of one split."""
    if df is None:
        return None
    texts = df[text_col].astype(str)
    langs = Counter(detect_language(t) for t in texts)
    chars = texts.str.len()
    return {
        "rows": int(len(df)),
        "classes": dict(sorted(Counter(label_strings(df[label_col])).items())),
        "languages": dict(langs.most_common()),
        "chars": {"mean": round(float(chars.mean()), 1) if len(df) else 0.0, "max": int(chars.max()) if len(df) else 0},
    }


def _texts(df: pd.DataFrame, d) -> list[str]:
    texts = df[d.text_column].astype(str)
    if d.text_pair_column:
        # a pair is a duplicate only when both sides match
        texts = texts + " \u2016 " + df[d.text_pair_column].astype(str)
    return texts.tolist()


def improve_training_data(
    cfg: RunConfig,
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    test: pd.DataFrame | None,
    seed: int,
    label_names: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Apply `data.clean`, `data.augment` and `data.balance` to the training split.

    Args:
        cfg: the RunConfig.
        train, validation, test: the splits (validation/test may be None; they are never changed).
        seed: the data seed (`data.split.seed` or `train.seed`).
        label_names: all class names in id order (for class weights); default the sorted training labels.

    Returns:
        (the new training split with string labels and an `augmentation` column, a report dict).

    Raises:
        ConfigError, DataError: bad options, missing resources (WordNet, Cilin, jieba, translation models).
    """
    from tuneforge.data.augment import Augmenter, augment_dataset, copies_for
    from tuneforge.data.balance import class_weights, resample
    from tuneforge.data.dedup import deduplicate
    from tuneforge.data.noise import apply_noise_action, find_label_errors, over_removal_warning
    from tuneforge.errors import DataError

    d = cfg.data
    c, a, b = d.clean, d.augment, d.balance
    train = train.reset_index(drop=True).copy()
    train[d.label_column] = label_strings(train[d.label_column])
    if AUGMENT_COLUMN not in train.columns:
        train[AUGMENT_COLUMN] = None
    report: dict = {
        "before": split_summary(train, d.text_column, d.label_column),
        "validation": split_summary(validation, d.text_column, d.label_column),
        "test": split_summary(test, d.text_column, d.label_column),
        "steps": [],
        "duplicates": {},
        "label_noise": {},
        "config": {
            "clean": c.model_dump(mode="json"),
            "augment": a.model_dump(mode="json"),
            "balance": b.model_dump(mode="json"),
        },
    }

    def step(name: str, before: int, after: int, **extra):
        report["steps"].append({"step": name, "rows_before": before, "rows_after": after, **extra})
        if before != after:
            log.info("data: %s: %d -> %d training rows", name, before, after)

    # 1. duplicates within train and leakage from validation/test
    texts = _texts(train, d)
    others = {name: _texts(df, d) for name, df in (("validation", validation), ("test", test)) if df is not None}
    dd = deduplicate(
        texts,
        train[d.label_column].tolist(),
        others,
        mode=c.dedup,
        threshold=c.near_threshold,
        within_train=c.within_train,
        cross_split=c.cross_split,
        conflicts=c.conflicts,
    )
    report["duplicates"] = {
        **dd.summary(),
        "groups": [[texts[i] for i in g][:3] for g in dd.groups[:EXAMPLES]],
        "conflicts": [[(texts[i], train[d.label_column].iat[i]) for i in g][:4] for g in dd.conflicts[:EXAMPLES]],
        "cross": [
            {
                "train": texts[m.train_index],
                "split": m.split,
                "other": others[m.split][m.other_index],
                "kind": m.kind,
                "similarity": m.similarity,
            }
            for m in dd.cross[:EXAMPLES]
        ],
    }
    if dd.cross and c.cross_split == "report":
        log.warning(
            "data: %d training rows duplicate validation/test rows (data.clean.cross_split: report keeps "
            "them; set it to drop to remove the leak)",
            len({m.train_index for m in dd.cross}),
        )
    n0 = len(train)
    train = train[dd.keep].reset_index(drop=True)
    step("deduplicate", n0, len(train), mode=c.dedup, within_train=c.within_train, cross_split=c.cross_split)

    # 2. label noise (on the deduplicated originals, before augmentation multiplies any error)
    if c.label_noise != "none":
        labels = train[d.label_column].tolist()
        noise_texts = _texts(train, d)
        providers = {"embed": None, "oof": None}
        if c.noise_features != "tfidf":
            # model embeddings or fine-tuned folds: providers from a higher layer (tuneforge.cleaning), by name
            from tuneforge.registry import NOISE_FEATURES

            kind, fn = NOISE_FEATURES.get(
                "model" if c.noise_features == "both" else c.noise_features, "data.clean.noise_features"
            )(cfg, train)
            providers[kind] = fn
        embed, oof = providers["embed"], providers["oof"]
        res = find_label_errors(
            noise_texts,
            labels,
            folds=c.noise_folds,
            seed=seed,
            embed=embed,
            with_tfidf=c.noise_features == "both",
            oof=oof,
        )
        keep, new_labels, acted = apply_noise_action(labels, res, c.label_noise, c.noise_threshold)
        changed = ~keep | (np.array(new_labels, dtype=object) != np.array(labels, dtype=object))
        report["label_noise"] = {
            **res.summary(),
            "action": c.label_noise,
            "features": c.noise_features,
            "folds": c.noise_folds,
            "acted_on": acted,
            "threshold": c.noise_threshold,
            "examples": [{**s, "text": noise_texts[s["index"]]} for s in res.suspects[:EXAMPLES]],
            # every suspect, for review (written to label_suspects.jsonl, not report.json)
            "all": [{**s, "text": noise_texts[s["index"]], "acted": bool(changed[s["index"]])} for s in res.suspects],
        }
        if res.skipped:
            log.warning("data: label-noise detection skipped: %s", res.skipped)
        warning = over_removal_warning(acted, len(labels), c.label_noise, res.oof_accuracy)
        if warning:
            log.warning(warning)
        n0 = len(train)
        train[d.label_column] = new_labels
        train = train[keep].reset_index(drop=True)
        step(f"label_noise:{c.label_noise}", n0, len(train), relabelled=acted if c.label_noise == "relabel" else 0)

    # 3. augmentation, and 4. resampling (augment mode tops rare classes up with augmented copies)
    aug_seed = a.seed if a.seed is not None else seed
    need_aug = a.enabled or b.sampling == "augment"
    if need_aug:
        augmenter = Augmenter.from_config(a)
        translator = None
        if "back_translation" in a.ops:
            from tuneforge.data.backtranslate import BackTranslator

            translator = BackTranslator.from_config(a.back_translation, aug_seed)
        originals = train[train[AUGMENT_COLUMN].isna()]
        labels = originals[d.label_column].tolist()
        copies = [0] * len(originals)
        if a.enabled:
            copies = copies_for(labels, a.num_per_example, a.per_class, aug_seed)
            unknown = sorted(set(map(str, a.per_class or {})) - set(labels))
            if unknown:
                log.warning("data.augment.per_class names classes not in the training split: %s", unknown)
        if b.sampling == "augment":
            # top up on top of any regular augmentation, measured on the counts after it
            counts = Counter(labels)
            for lab, k in zip(labels, copies):
                counts[lab] += k
            target = b.ratio * max(counts.values())
            need = {lab: max(0.0, target - counts[lab]) for lab in counts}
            n_orig = Counter(labels)
            extra = copies_for(labels, 0.0, {lab: need[lab] / n_orig[lab] for lab in n_orig}, aug_seed + 1)
            copies = [x + y for x, y in zip(copies, extra)]
        # with sentence pairs only the first text is augmented: changing both could change their relation
        made = augment_dataset(originals[d.text_column].astype(str).tolist(), copies, augmenter, aug_seed, translator)
        if made:
            src = originals.iloc[[i for i, _, _ in made]].copy()
            src[d.text_column] = [t for _, t, _ in made]
            src[AUGMENT_COLUMN] = [op for _, _, op in made]
            n0 = len(train)
            train = pd.concat([train, src], ignore_index=True)
            ops = Counter(op for _, _, op in made)
            step("augment", n0, len(train), requested=int(sum(copies)), by_operation=dict(ops))
        else:
            step("augment", len(train), len(train), requested=int(sum(copies)), by_operation={})
    if b.sampling in ("oversample", "undersample"):
        idx = resample(train[d.label_column].tolist(), b.sampling, b.ratio, seed)
        n0 = len(train)
        train = train.iloc[idx].reset_index(drop=True)
        step(b.sampling, n0, len(train), ratio=b.ratio)

    if len(train) == 0:
        raise DataError("no training rows left after cleaning (data.clean removed them all)")
    if train[d.label_column].nunique() < 2:
        raise DataError(
            "the training split has a single class after cleaning; relax data.clean "
            "(label_noise, conflicts) or check the data"
        )
    names = list(label_names) if label_names else sorted(set(train[d.label_column]))
    weights = class_weights(train[d.label_column].tolist(), names, b.class_weights)
    report["class_weights"] = None if weights is None else {n: round(w, 4) for n, w in zip(names, weights)}
    report["after"] = split_summary(train, d.text_column, d.label_column)
    report["after"]["augmented_rows"] = int(train[AUGMENT_COLUMN].notna().sum())
    return train, report
