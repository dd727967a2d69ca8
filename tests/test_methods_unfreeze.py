"""Progressive unfreezing through the real Trainer (the engine's trainer class): each part of the model
starts changing exactly at its unfreeze point, never before, and keeps changing after."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from methods_helpers import build, make_method
from tuneforge.methods.layers import EMBEDDINGS, HEAD, TOP
from tuneforge.methods.unfreeze import ProgressiveUnfreezing, UnfreezeSchedule
from tuneforge.training.trainer import make_trainer_class


class Recorder(TrainerCallback):
    """After every optimizer step: which parts of the model changed in that step."""

    def __init__(self, model, layout):
        self.parts = {}
        for p in model.parameters():
            self.parts.setdefault(layout.where[id(p)], []).append(p)
        self.last = self._snap()
        self.changed_at = {k: [] for k in self.parts}

    def _snap(self):
        return {k: [p.detach().clone() for p in ps] for k, ps in self.parts.items()}

    def on_step_end(self, args, state, control, **kw):
        now = self._snap()
        for k in self.parts:
            if any(not torch.equal(a, b) for a, b in zip(self.last[k], now[k])):
                self.changed_at[k].append(state.global_step)
        self.last = now


def run_trainer(tmp_path, method, model, ctx, steps):
    import datasets

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (16, 8), generator=g)
    ds = datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * 16, "labels": [i % 2 for i in range(16)]}
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "ck"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1000,
        disable_tqdm=True,
        seed=0,
    )
    rec = Recorder(model, method.layout)
    trainer = make_trainer_class()(
        model=model, args=args, train_dataset=ds, callbacks=[*method.callbacks(ctx), rec], method=method
    )
    trainer.train()
    return rec, trainer


@pytest.mark.integration
def test_full_unfreezes_top_down_every_two_steps(tiny_bert, tmp_path):
    m = make_method("full", unfreeze_schedule={"start": "head", "every_steps": 2})
    model, ctx = build("bert", tiny_bert, m)
    rec, trainer = run_trainer(tmp_path, m, model, ctx, steps=8)
    # stage 0: head + pooler (steps 1-2); block 1 from step 3; block 0 from step 5; embeddings from step 7
    first = {k: v[0] if v else None for k, v in rec.changed_at.items()}
    assert first == {HEAD: 1, TOP: 1, 1: 3, 0: 5, EMBEDDINGS: 7}, rec.changed_at
    for part, start in first.items():  # once unfrozen, a part moves at every step
        assert rec.changed_at[part] == list(range(start, 9)), (part, rec.changed_at[part])
    # the optimizer held every parameter from the start (nothing added mid-run)
    held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()}
    assert all(p.requires_grad for p in model.parameters())  # restored at the end


@pytest.mark.integration
def test_freeze_with_top_k_start_and_groups(tiny_wordpiece_llama, tmp_path):
    # causal LM with the Trainer: use the freeze method on tiny Llama; frozen_layers=0 is invalid, so train
    # both blocks via trainable_layers=2 and start with the top one already trainable
    m = make_method("freeze", trainable_layers=2, unfreeze_schedule={"start": "top_k", "top_k": 1, "every_steps": 3})
    model, ctx = build("llama", tiny_wordpiece_llama, m)
    import datasets

    ids = torch.randint(5, 60, (8, 8), generator=torch.Generator().manual_seed(0))
    ds = datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * 8, "labels": ids.tolist()}
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "ck"),
        max_steps=5,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    rec = Recorder(model, m.layout)
    make_trainer_class()(model=model, args=args, train_dataset=ds, callbacks=[*m.callbacks(ctx), rec], method=m).train()
    assert rec.changed_at[TOP] == [1, 2, 3, 4, 5] and rec.changed_at[1] == [1, 2, 3, 4, 5]
    assert rec.changed_at[0] == [4, 5]
    assert rec.changed_at[EMBEDDINGS] == []  # freeze keeps the embeddings frozen throughout


@pytest.mark.unit
def test_epoch_clock_and_stage_math():
    s = UnfreezeSchedule(every_epochs=0.5, group_size=2)
    cb = ProgressiveUnfreezing([[torch.nn.Parameter(torch.zeros(1))] for _ in range(3)], s)
    assert [cb.stage_at(0, e) for e in (0.0, 0.49, 0.5, 0.99, 1.0, 7.0)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="exactly one of every_epochs or every_steps"):
        UnfreezeSchedule(every_epochs=1, every_steps=3)
