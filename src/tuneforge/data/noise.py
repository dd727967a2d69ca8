"""Label-noise detection by confident learning (Northcutt et al., via `cleanlab`) on out-of-fold probabilities
of a fast model: logistic regression on TF-IDF features, on sentence embeddings of the run's own pretrained
model (frozen, mean-pooled), or the average of both; or, when asked, of the run's own model and method
fine-tuned k times. Every model is fitted inside its fold, so no example is scored by a model that saw it.

The features that need a pretrained model or training (`model`, `finetune`) are not here: nothing in the data
layer loads or trains models. They are providers in the NOISE_FEATURES registry, from tuneforge.cleaning."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tuneforge.data.text import detect_language
from tuneforge.errors import ConfigError, DataError

log = logging.getLogger("tuneforge")


@dataclass
class NoiseResult:
    labels: list[str]  # class names, in the column order of `probs`
    probs: np.ndarray | None  # out-of-fold probabilities (rows x classes)
    suspects: list[dict] = field(default_factory=list)  # index, given, suggested, confidence, given_prob
    skipped: str | None = None  # why detection did not run
    oof_accuracy: float | None = None

    def summary(self) -> dict:
        return {
            "suspects": len(self.suspects),
            "skipped": self.skipped,
            "detector_oof_accuracy": None if self.oof_accuracy is None else round(self.oof_accuracy, 4),
        }


def _features(texts: Sequence[str]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    sample = list(texts[:200])
    zh = sum(detect_language(t) == "zh" for t in sample) > len(sample) / 2
    # Chinese has no spaces, so words would be whole clauses: character n-grams stand in for words there
    if zh:
        return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1)
    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)


def out_of_fold_probs(
    texts: Sequence[str],
    y: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
    with_tfidf: bool = False,
) -> np.ndarray:
    """Probabilities for every row from a logistic-regression model that never saw that row.

    Args:
        texts: the texts (TF-IDF features are built from them unless `embeddings` is given).
        y: integer class ids (0..K-1), every class present at least `folds` times.
        folds: number of stratified folds.
        seed: fold assignment seed.
        embeddings: dense features, one row per text (from `embed_texts`), used instead of TF-IDF.
        with_tfidf: with `embeddings`, average the embedding model's probabilities with the TF-IDF model's (the
            two err on different rows: on two rotten-tomatoes slices the average was 1.5-2 points more accurate
            than the embeddings alone, and flagged fewer correct rows at the same recall).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    dense = None
    if embeddings is not None:
        # dense, normalised features: lbfgs with mild regularisation (C=1 was best of 1/4/16 on rotten tomatoes)
        dense = cross_val_predict(
            LogisticRegression(C=1.0, max_iter=2000), embeddings, y, cv=cv, method="predict_proba"
        )
        if not with_tfidf:
            return dense
    # saga: an order of magnitude faster than lbfgs on sparse TF-IDF, and multinomial for K > 2
    model = make_pipeline(_features(texts), LogisticRegression(C=4.0, solver="saga", max_iter=2000, random_state=seed))
    sparse = cross_val_predict(model, list(texts), y, cv=cv, method="predict_proba")
    return sparse if dense is None else (sparse + dense) / 2


def find_label_errors(
    texts: Sequence[str],
    labels: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    probs: np.ndarray | None = None,
    embed=None,
    with_tfidf: bool = False,
    oof=None,
) -> NoiseResult:
    """Rows whose given label is likely wrong, most confident first.

    A suspect's `suggested` label is the most probable other class and `confidence` its out-of-fold
    probability. Detection is skipped (with the reason in `skipped`) when a class has fewer than 2 rows.

    Args:
        texts: training texts.
        labels: their labels (strings).
        folds: cross-validation folds (reduced to the smallest class size when that is smaller).
        seed: fold seed.
        probs: precomputed out-of-fold probabilities (columns in sorted label order), to skip the model.
        embed: optional callable texts -> feature matrix (e.g. `embed_texts` bound to a model); TF-IDF if None.
        with_tfidf: with `embed`, average its probabilities with a TF-IDF model's (`noise_features: both`).
        oof: optional callable (texts, y, folds, seed) -> out-of-fold probabilities, instead of the logistic
            regression (e.g. `finetuned_oof_probs` bound to a run config and its rows).

    Raises:
        ConfigError: folds < 2.
        DataError: texts and labels differ in length.
    """
    if folds < 2:
        raise ConfigError(f"data.clean.noise_folds must be at least 2, got {folds}")
    if len(texts) != len(labels):
        raise DataError(f"label-noise detection: {len(texts)} texts but {len(labels)} labels")
    labels = [str(x) for x in labels]
    names = sorted(set(labels))
    if len(names) < 2:
        return NoiseResult(names, None, skipped="fewer than two classes")
    ids = {n: i for i, n in enumerate(names)}
    y = np.array([ids[x] for x in labels])
    smallest = int(np.bincount(y).min())
    if probs is None:
        if smallest < 2:
            return NoiseResult(names, None, skipped=f"a class has only {smallest} row(s)")
        if oof is not None:
            probs = np.asarray(oof(texts, y, min(folds, smallest), seed))
        else:
            features = None if embed is None else np.asarray(embed(list(texts)))
            probs = out_of_fold_probs(texts, y, min(folds, smallest), seed, embeddings=features, with_tfidf=with_tfidf)
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        raise DataError(
            "label-noise detection needs cleanlab: pip install cleanlab (or set data.clean.label_noise=none)"
        ) from None

    issues = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    suspects = []
    for i in issues:
        other = probs[i].copy()
        other[y[i]] = -1.0
        s = int(other.argmax())
        suspects.append(
            {
                "index": int(i),
                "given": names[y[i]],
                "suggested": names[s],
                "confidence": round(float(probs[i, s]), 4),
                "given_prob": round(float(probs[i, y[i]]), 4),
            }
        )
    return NoiseResult(names, probs, suspects, oof_accuracy=float((probs.argmax(1) == y).mean()))


def apply_noise_action(labels: Sequence[str], result: NoiseResult, action: str, threshold: float = 0.5):
    """Apply `report` / `drop` / `relabel` to the suspects whose confidence is at least `threshold`.

    Args:
        labels: the training labels (strings).
        result: from `find_label_errors`.
        action: `none`, `report`, `drop` or `relabel`.
        threshold: minimum confidence of the suggested label for drop/relabel.

    Returns:
        (keep mask, new labels, number of rows acted on).

    Raises:
        ConfigError: unknown action or threshold outside [0, 1].
    """
    if action not in ("none", "report", "drop", "relabel"):
        raise ConfigError(f"data.clean.label_noise: unknown action '{action}' (use none, report, drop or relabel)")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"data.clean.noise_threshold must be in [0, 1], got {threshold}")
    labels = [str(x) for x in labels]
    keep = np.ones(len(labels), dtype=bool)
    acted = [s for s in result.suspects if s["confidence"] >= threshold] if action in ("drop", "relabel") else []
    for s in acted:
        if action == "drop":
            keep[s["index"]] = False
        else:
            labels[s["index"]] = s["suggested"]
    return keep, labels, len(acted)


def over_removal_warning(
    acted: int, rows: int, action: str, oof_accuracy: float | None, max_share: float = 0.1
) -> str | None:
    """A warning when `drop`/`relabel` acts on more than `max_share` of the training rows, else None.

    A detector that disagrees with many given labels also disagrees with many correct ones: on rotten tomatoes
    with 10% injected flips it flagged ~24% of the rows at precision ~0.28, and dropping them lost accuracy
    (benchmarks/data_effects.py)."""
    if action not in ("drop", "relabel") or rows == 0 or acted / rows <= max_share:
        return None
    acc = "" if oof_accuracy is None else f" (its out-of-fold accuracy is {oof_accuracy:.2f})"
    return (
        f"data: label_noise={action} acts on {acted} of {rows} training rows ({acted / rows:.0%}) flagged by "
        f"the detector{acc}; a share this large usually includes many correct labels: check the suspects in "
        f"data/report.md, raise data.clean.noise_threshold, or use label_noise=report"
    )
