"""The reference model of preference runs (`task.reference`, `task.reference_model`) and its log-probs (the GRPO task's
KL term uses its live `Reference` too).

Three sources, one rule each (docs/preference.md):

- `adapters`: the policy itself with the method's adapters switched off (the method's `disabled_adapters` hook):
  no second copy in memory, one extra forward pass (without gradients) per step.
- `copy`: a frozen copy of the base model, or of `task.reference_model`, loaded once on the policy's device.
- `precompute`: the reference's log-probs of every pair of every split, computed once before the first step
  (by the adapters-off policy, the untrained policy itself for methods without adapters, or a copy of
  `task.reference_model` freed afterwards), cached in the run's `reference/` directory and read back on `--resume`
  instead of computed again. The cache is keyed by the encoded pairs and the reference's identity, so a changed
  data file or reference never reuses stale numbers. Not for kto: its KL rows pair a prompt with another row's
  answer of the same batch, which is only known once batches are drawn.

`auto` picks `adapters` where the method has adapters, else `precompute` (kto: `copy`), and `precompute` when
`task.reference_model` is set (kto: `copy`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.tasks.preference_config import REFERENCE_LOSSES

#: the columns precomputed reference log-probs add to each encoded pair (the pair collator batches them)
COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
CACHE_FILE = "logps.npz"
KEY_FILE = "key.json"
#: seconds between progress lines while the reference log-probs are computed
PROGRESS_SECONDS = 30.0


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or accelerate) wrapper."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def core(model: nn.Module) -> nn.Module:
    """The transformers model under any wrapper and adapter container."""
    model = unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def disable_dropout(model: nn.Module) -> None:
    """Dropout off for good, as TRL does by default: with dropout on, the policy's log-ratio to the reference is
    not 0 at step 0 and the reference pass (adapters off) would see a different network from the policy's."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def has_adapters(model: nn.Module, without_adapters: Callable | None) -> bool:
    if without_adapters is None:
        return False
    with without_adapters(model) as base:
        return base is not None


def resolve_mode(cfg: RunConfig, adapters: bool) -> str | None:
    """`adapters`, `copy` or `precompute` for this run (None: its loss needs no reference). ConfigError when
    `task.reference: adapters` is asked of a method without adapters."""
    t = cfg.task
    if t.loss not in REFERENCE_LOSSES:
        return None
    if t.reference not in (None, "auto"):
        mode = t.reference
    elif t.reference_model or not adapters:
        mode = "copy" if t.loss == "kto" else "precompute"
    else:
        mode = "adapters"
    if mode == "adapters" and not adapters:
        raise ConfigError(
            f"task.reference: adapters: method '{cfg.method.name}' has no adapters to switch off; use precompute "
            f"or copy"
        )
    return mode


def load_copy(cfg: RunConfig, like: nn.Module, tokenizer=None) -> nn.Module:
    """A frozen copy of the reference model (`task.reference_model`, else the run's base model) on the policy's
    device, in eval mode, dropout off. ConfigError when its vocabulary differs from the policy's."""
    from tuneforge.models.loader import load_model, resolve_model
    from tuneforge.models.vocabulary_setup import grow_base_copy

    m = cfg.model
    name = cfg.task.reference_model or m.name
    revision = None if cfg.task.reference_model else m.revision
    path = resolve_model(name, revision)
    copy = load_model(path, core(like).__class__, m.dtype, m.trust_remote_code)
    if tokenizer is not None and not cfg.task.reference_model:  # the run's own added tokens, as they started
        grow_base_copy(copy, path, tokenizer)
    mine, theirs = (x.config.get_text_config().vocab_size for x in (core(like), copy))
    if mine != theirs:
        raise ConfigError(
            f"task.reference_model: {name} has a vocabulary of {theirs} tokens, the policy {mine}: the reference must "
            f"share the policy's tokenizer"
        )
    p = next(like.parameters())
    copy.to(p.device).eval().requires_grad_(False)
    disable_dropout(copy)
    return copy


class Reference:
    """`with reference(model) as ref:` the network whose log-probs are the reference's, for the live modes (and
    for pairs without precomputed log-probs, such as `tuneforge eval` of a finished run)."""

    def __init__(self, cfg: RunConfig, without_adapters: Callable | None):
        self.cfg = cfg
        self.without_adapters = without_adapters
        self._copy: nn.Module | None = None

    @contextlib.contextmanager
    def __call__(self, model: nn.Module) -> Iterator[nn.Module]:
        wanted = self.cfg.task.reference
        if self.without_adapters is not None and wanted != "copy" and not self.cfg.task.reference_model:
            with self.without_adapters(model) as base:
                if base is not None:
                    yield base
                    return
        if wanted == "adapters":
            raise ConfigError(
                f"task.reference: adapters: method '{self.cfg.method.name}' has no adapters to switch off; use "
                f"precompute or copy"
            )
        if self._copy is None:
            self._copy = load_copy(self.cfg, model)
        yield self._copy


def _key(cfg: RunConfig, splits: dict, source: str, eval_fp32: bool = False) -> dict:
    """What the cached log-probs depend on: the reference, the precision and every encoded pair's tokens."""
    digest = hashlib.sha256()
    for name, data in splits.items():
        digest.update(name.encode())
        for col in ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"):
            for row in data[col]:
                digest.update(np.asarray(row, dtype=np.int64).tobytes())
                digest.update(b"|")
    m = cfg.model
    return {
        "reference": source,
        "revision": None if cfg.task.reference_model else m.revision,
        "dtype": m.dtype,
        "precision": cfg.train.precision,
        "held_out_precision": "fp32" if eval_fp32 else cfg.train.precision,
        "keep_layers": None if cfg.task.reference_model else m.keep_layers,
        "pairs": {name: len(data) for name, data in splits.items()},
        "data": digest.hexdigest(),
    }


def read_cache(cache_dir: Path, key: dict) -> dict[str, np.ndarray] | None:
    try:
        if json.loads((cache_dir / KEY_FILE).read_text()) != key:
            return None
        with np.load(cache_dir / CACHE_FILE) as z:
            out = {name: z[name] for name in key["pairs"]}
    except (OSError, ValueError, KeyError):
        return None
    if any(out[n].shape != (k, 2) for n, k in key["pairs"].items()):
        return None
    return out


def write_cache(cache_dir: Path, key: dict, logps: dict[str, np.ndarray]) -> None:
    """The log-probs, then their key: a kill between the two leaves no key, so the next start computes again."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / KEY_FILE).unlink(missing_ok=True)
    tmp = cache_dir / f".{CACHE_FILE}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **logps)
    os.replace(tmp, cache_dir / CACHE_FILE)
    tmp_key = cache_dir / f".{KEY_FILE}.tmp"
    tmp_key.write_text(json.dumps(key, indent=2))
    os.replace(tmp_key, cache_dir / KEY_FILE)


def _say(line: str) -> None:
    print(f"tuneforge: {line}", file=sys.stderr, flush=True)


@torch.no_grad()
def compute_logps(
    ref: nn.Module,
    splits: dict,
    collator: Callable,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    logps_of: Callable,
) -> dict[str, np.ndarray]:
    """[pairs, 2] (chosen, rejected) summed answer log-probs of every split's pairs under `ref`, in order, with a
    progress line every PROGRESS_SECONDS."""
    total = sum(len(d) for d in splits.values())
    done, start, last = 0, time.monotonic(), time.monotonic()
    out = {}
    for name, data in splits.items():
        rows = []
        for lo in range(0, len(data), batch_size):
            batch = collator([data[i] for i in range(lo, min(lo + batch_size, len(data)))])
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
            with autocast():
                logps, _ = logps_of(ref, batch)
            half = logps.shape[0] // 2
            rows.append(torch.stack([logps[:half], logps[half:]], 1).float().cpu().numpy())
            done += half
            if time.monotonic() - last >= PROGRESS_SECONDS:
                last = time.monotonic()
                _say(f"reference log-probs: {done}/{total} pairs ({last - start:.0f} s)")
        out[name] = np.concatenate(rows) if rows else np.zeros((0, 2), np.float32)
    return out


def attach(prepared, logps: dict[str, np.ndarray]):
    """`prepared` with each split's pairs carrying their reference log-probs (COLUMNS)."""
    changes = {}
    for name, values in logps.items():
        data = getattr(prepared, name)
        for i, col in enumerate(COLUMNS):
            if col in data.column_names:
                data = data.remove_columns(col)
            data = data.add_column(col, [float(v) for v in values[:, i]])
        changes[name] = data
    return dataclasses.replace(prepared, **changes)


def precompute(
    cfg: RunConfig, trainer, prepared, without_adapters: Callable | None, cache_dir: Path, logps_of: Callable
):
    """`prepared` with the reference log-probs of every pair attached, when the run's reference mode is
    `precompute`: read from `cache_dir` when its key matches, else computed (and cached). Otherwise `prepared`
    unchanged. `trainer`: the run's Trainer, whose model (on its device) and mixed precision are used."""
    model = trainer.model
    if resolve_mode(cfg, has_adapters(model, without_adapters)) != "precompute":
        return prepared
    splits = {n: d for n in ("train", "validation", "test") if (d := getattr(prepared, n)) is not None}
    source = cfg.task.reference_model or f"{cfg.model.name} (the run's base model)"
    # a run that evaluates in full precision (Trainer.tf_eval_fp32) gets its held-out pairs' reference in fp32 too
    eval_fp32 = bool(getattr(trainer, "tf_eval_fp32", False))
    key = _key(cfg, splits, source, eval_fp32)
    cache_dir = Path(cache_dir)
    logps = read_cache(cache_dir, key)
    total = sum(key["pairs"].values())
    if logps is not None:
        _say(f"reference log-probs: read from {cache_dir / CACHE_FILE} ({total} pairs; not computed again)")
        return attach(prepared, logps)
    _say(f"reference log-probs: computing for {total} pairs with {source}, once (cached in {cache_dir})")
    start = time.monotonic()
    collator = trainer.data_collator
    device = next(model.parameters()).device
    batch_size = max(1, trainer.args.per_device_eval_batch_size)
    train_autocast = trainer.accelerator.autocast

    def compute(ref):
        """Each split in its precision: train as the training steps compute, held-out pairs as evaluation does."""
        out = {}
        for name, data in splits.items():
            autocast = contextlib.nullcontext if eval_fp32 and name != "train" else train_autocast
            out.update(compute_logps(ref, {name: data}, collator, batch_size, device, autocast, logps_of))
        return out

    was_training = model.training
    model.eval()
    disable_dropout(model)
    try:
        if cfg.task.reference_model:
            copy = load_copy(cfg, model)
            try:
                logps = compute(copy)
            finally:
                del copy
        elif without_adapters is not None:
            with without_adapters(model) as base:
                ref = base if base is not None else model  # no adapters: the untrained policy is the base
                logps = compute(ref)
        else:
            logps = compute(model)
    finally:
        model.train(was_training)
    write_cache(cache_dir, key, logps)
    _say(f"reference log-probs: {total} pairs in {time.monotonic() - start:.0f} s")
    return attach(prepared, logps)
