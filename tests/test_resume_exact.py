"""A run resumed from any checkpoint, in any epoch, ends exactly where the uninterrupted run ends (CPU, fp32):
same per-step losses after the resumed step and the same final metrics, with length-grouped batches and with
packed SFT rows."""

from __future__ import annotations

import json
import shutil

import pytest

from sft_common import chat_rows, make_tiny_llama, write_jsonl

from conftest import tiny_config


def _losses(run_dir) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r and "step" in r}


def _test_metrics(run_dir) -> dict:
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    return metrics.get("test") or metrics.get("validation")


def _resume_from(full_run, step: int, into, overrides=()) -> object:
    """Copy the finished run as it was when checkpoint `step` had just been written, then --resume it."""
    import tuneforge

    shutil.copytree(full_run, into)
    for ckpt in (into / "checkpoints").glob("checkpoint-*"):
        if int(ckpt.name.split("-")[1]) > step:
            shutil.rmtree(ckpt)
    for name in ("model", "eval"):
        shutil.rmtree(into / name, ignore_errors=True)
    (into / "efficiency.json").unlink(missing_ok=True)
    (into / "status.json").write_text(json.dumps({"state": "failed", "error": "killed"}))
    return tuneforge.train(tuneforge.load_config(into / "config.yaml", [f"output.dir={into}", *overrides]), resume=True)


def _train_keeping_checkpoints(raw: dict):
    import tuneforge

    mp = pytest.MonkeyPatch()
    mp.setenv("TUNEFORGE_KEEP_CHECKPOINTS", "1")
    try:
        return tuneforge.train(tuneforge.load_config(raw=raw))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory, tiny_bert):
    """3 epochs of 12 steps on the tiny BERT with length-grouped batches, a checkpoint every 6 steps kept."""
    import pandas as pd

    from conftest import make_sentiment_rows

    d = tmp_path_factory.mktemp("resume")
    rows = make_sentiment_rows(240)
    for i, r in enumerate(rows):  # lengths that differ, so grouping by length has something to group
        r["text"] = r["text"] + " fine" * (i % 7)
    pd.DataFrame(rows).to_csv(d / "data.csv", index=False)
    raw = tiny_config(
        tiny_bert,
        str(d / "data.csv"),
        str(d / "full"),
        method="lora",
        train__epochs=3,
        train__batch_size=16,
        train__eval_strategy="steps",
        train__eval_steps=6,
        train__save_steps=6,
        train__save_total_limit=10,
        train__logging_steps=1,
    )
    raw["train"]["group_by_length"] = True
    result = _train_keeping_checkpoints(raw)
    assert result.efficiency["global_steps"] == 36
    return d / "full"


@pytest.mark.integration
@pytest.mark.parametrize("step", [6, 18, 30])  # in epochs 1, 2 and 3
def test_resume_in_any_epoch_matches_the_uninterrupted_run(grouped_run, step, tmp_path):
    _resume_from(grouped_run, step, tmp_path / "resumed")
    full, resumed = _losses(grouped_run), _losses(tmp_path / "resumed")
    after = [s for s in full if s > step]
    assert after and all(resumed[s] == full[s] for s in after), [
        (s, full[s], resumed.get(s)) for s in after if resumed.get(s) != full[s]
    ][:3]
    assert _test_metrics(tmp_path / "resumed") == _test_metrics(grouped_run)


@pytest.mark.unit
def test_length_grouped_order_is_seeded_per_epoch():
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tuneforge.data.sampling import epoch_seeded

    lengths = [i % 13 + 1 for i in range(64)]
    s = epoch_seeded(LengthGroupedSampler(8, lengths=lengths), seed=3)
    s.set_epoch(1)
    first = list(s)
    import torch

    torch.manual_seed(999)  # the global RNG no longer decides the order
    s.set_epoch(0)
    zero = list(s)
    s.set_epoch(1)
    assert list(s) == first and zero != first and sorted(first) == list(range(64))


@pytest.mark.integration
def test_sft_resume_with_packing_matches(tmp_path):
    model = make_tiny_llama(tmp_path / "llama")
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(60))
    raw = {
        "model": {"name": model},
        "data": {"train": data, "max_length": 64, "packing": True, "split": {"validation": 0.2, "test": 0.0}},
        "task": {"type": "causal_lm", "report_prompts": 0, "generation": {"max_new_tokens": 4}},
        "method": {"name": "lora", "r": 4},
        "train": {
            "epochs": 2,
            "batch_size": 2,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "report_to": "none",
            "eval_strategy": "steps",
            "save_steps": 4,
            "eval_steps": 4,
            "save_total_limit": 20,
            "seed": 5,
        },
        "eval": {"metric": "loss", "load_best_model": False},
        "output": {"dir": str(tmp_path / "full")},
    }
    result = _train_keeping_checkpoints(raw)
    total = result.efficiency["global_steps"]
    ckpts = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "full" / "checkpoints").glob("checkpoint-*"))
    later = [c for c in ckpts if c > total // 2 and c < total]  # a checkpoint in the second epoch
    assert later, (ckpts, total)
    _resume_from(tmp_path / "full", later[0], tmp_path / "resumed")
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert all(resumed[s] == full[s] for s in full if s > later[0])
    assert _test_metrics(tmp_path / "resumed") == _test_metrics(tmp_path / "full")


@pytest.mark.integration
def test_image_resume_with_augmentation_and_mixing_matches(tmp_path):
    """Random crops, flips, RandAugment, CutMix and MixUp draw from torch's generator, which a checkpoint saves: a
    resumed image run sees the same batches and ends with the same losses and metrics."""
    from image_common import make_image_folder, make_tiny_resnet

    raw = {
        "model": {"name": make_tiny_resnet(tmp_path / "resnet")},
        "task": {"type": "image_classification"},
        "data": {
            "train": str(make_image_folder(tmp_path / "images", per_class=12)),
            "split": {"validation": 0.2, "test": 0.2},
            "augment": {"randaugment": {"num_ops": 2, "magnitude": 9}},
            "cutmix": {"alpha": 1.0, "prob": 0.5},
            "mixup": {"alpha": 0.4, "prob": 0.5},
        },
        "method": {"name": "full"},
        "train": {
            "epochs": 3,
            "batch_size": 4,
            "learning_rate": 0.01,
            "logging_steps": 1,
            "report_to": "none",
            "eval_strategy": "steps",
            "eval_steps": 4,
            "save_steps": 4,
            "save_total_limit": 20,
            "seed": 3,
        },
        "output": {"dir": str(tmp_path / "full")},
    }
    result = _train_keeping_checkpoints(raw)
    total = result.efficiency["global_steps"]
    mid = [int(p.name.split("-")[1]) for p in (tmp_path / "full" / "checkpoints").glob("checkpoint-*")]
    step = sorted(s for s in mid if total // 3 < s < total)[0]  # inside the second epoch
    _resume_from(tmp_path / "full", step, tmp_path / "resumed")
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    after = [s for s in full if s > step]
    assert after and all(resumed[s] == full[s] for s in after), [
        (s, full[s], resumed.get(s)) for s in after if resumed.get(s) != full[s]
    ][:3]
    assert _test_metrics(tmp_path / "resumed") == _test_metrics(tmp_path / "full")
