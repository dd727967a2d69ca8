"""Model-based data cleaning: the label-noise feature providers that need a pretrained model or training.

The data layer (`tuneforge.data.prepare`) finds them by name in NOISE_FEATURES (`data.clean.noise_features`),
so it never imports what trains: `model` embeds the texts with the run's frozen base model, `finetune`
fine-tunes the run's own model and method once per fold. Each provider is `factory(cfg, frame)` returning the
callable `find_label_errors` takes (`embed` for features, `oof` for out-of-fold probabilities).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from tuneforge.errors import ConfigError
from tuneforge.registry import NOISE_FEATURES

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

log = logging.getLogger("tuneforge")


@NOISE_FEATURES.register("model")
def model_features(cfg: RunConfig, frame):
    """`embed` for `find_label_errors`: the run's base model's sentence embeddings."""
    from tuneforge.models.embed import embed_texts
    from tuneforge.models.loader import resolve_model

    return "embed", partial(
        embed_texts,
        resolve_model(cfg.model.name, cfg.model.revision),
        max_length=cfg.data.max_length or 128,
        trust_remote_code=cfg.model.trust_remote_code,
    )


@NOISE_FEATURES.register("finetune")
def finetune_features(cfg: RunConfig, frame):
    """`oof` for `find_label_errors`: out-of-fold probabilities of the run's own model fine-tuned per fold."""
    return "oof", partial(finetuned_oof_probs, cfg, frame)


def finetuned_oof_probs(
    cfg: RunConfig, frame, texts: Sequence[str], y: np.ndarray, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold probabilities of the run's own model, method and training settings, fine-tuned once per fold
    on the other folds (`data.clean.noise_features: finetune`): `folds` extra trainings of the run's size.

    The fold runs train on the rows as given (no cleaning, augmentation, resampling or validation; class weights
    are kept) and are written to a temporary directory that is removed afterwards.

    Args:
        cfg: the run's RunConfig.
        frame: the training rows (text, optional pair and label columns; labels as strings).
        texts: unused (the rows come from `frame`); kept so this is called like `out_of_fold_probs`.
        y: class ids in sorted label order, one per row.
        folds: number of stratified folds.
        seed: fold assignment seed.
    """
    import copy
    import gc
    import shutil
    import tempfile
    from pathlib import Path

    from sklearn.model_selection import StratifiedKFold

    from tuneforge.config.loader import load_config
    from tuneforge.evaluation.classification import softmax
    from tuneforge.inference import classify_logits, load_run
    from tuneforge.training.engine import train

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # every rank would train (and save) its own fold models in its own temporary directory
        raise ConfigError(
            "data.clean.noise_features=finetune trains its fold models in one process, not under a "
            "distributed launch: run `tuneforge data prepare CONFIG --out DIR` first, in one "
            "process, and point data.train/validation/test at the files it writes"
        )
    d = cfg.data
    names = sorted(set(frame[d.label_column].astype(str)))
    columns = [c for c in (d.text_column, d.text_pair_column, d.label_column) if c]
    base = cfg.model_dump(mode="json")
    data = base["data"]
    data.update(validation=None, test=None, max_train_samples=None)
    data["split"].update(validation=0.0, test=0.0)
    data["clean"].update(dedup="none", cross_split="none", label_noise="none")
    data["augment"]["enabled"] = False
    data["balance"]["sampling"] = "none"
    base["train"].update(
        eval_strategy="no", save_steps=None, report_to="none", early_stopping={"patience": None, "threshold": 0.0}
    )
    base["eval"]["load_best_model"] = False
    probs = np.zeros((len(frame), len(names)))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with tempfile.TemporaryDirectory(prefix="tuneforge-noise-") as tmp:
        for k, (fit, held) in enumerate(cv.split(np.zeros(len(y)), y), 1):
            log.info(
                "data: label-noise detection (noise_features=finetune): training fold %d of %d on %d rows",
                k,
                folds,
                len(fit),
            )
            path = Path(tmp) / f"fold{k}.parquet"
            frame.iloc[fit][columns].to_parquet(path, index=False)
            raw = copy.deepcopy(base)
            raw["data"]["train"] = str(path)
            raw["output"] = {"dir": str(Path(tmp) / f"run{k}"), "overwrite": True, "name": f"noise-fold{k}"}
            run = load_run(train(load_config(raw=raw)).run_dir)
            rows = frame.iloc[held]
            pairs = rows[d.text_pair_column].astype(str).tolist() if d.text_pair_column else None
            p = softmax(classify_logits(run, rows[d.text_column].astype(str).tolist(), pairs))
            for j, name in enumerate(run.meta["labels"]):
                if name in names:  # task.labels may name classes this split does not have
                    probs[held, names.index(name)] = p[:, j]
            del run
            gc.collect()
            shutil.rmtree(Path(tmp) / f"run{k}", ignore_errors=True)
    return probs / probs.sum(1, keepdims=True).clip(min=1e-12)
