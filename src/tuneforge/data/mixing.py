"""Mixing rows from several sources into one epoch (multi-task training from several data files).

An epoch has as many rows as all sources together; `strategy` decides how many of them each source gives:

    proportional  every row once, shuffled together (a source's share is its size)
    temperature   shares proportional to size^(1/T): T=1 is proportional, large T approaches equal shares, so a
                  small source is seen more often (its rows repeat) and a large one less (a sample of it)
    round_robin   sources take turns row by row: equal shares

Inside a source, rows come in a fresh random order each time the source is exhausted (so a repeated small source
cycles through all its rows before any repeats). The order depends only on (seed, epoch), so a run resumed in the
middle of an epoch continues with the same rows.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

STRATEGIES = ("proportional", "temperature", "round_robin")


def source_shares(sizes: list[int], strategy: str, temperature: float = 2.0) -> np.ndarray:
    """The expected fraction of an epoch each source gives (sums to 1).

    Raises ValueError for an unknown strategy or a source with no rows."""
    n = np.asarray(sizes, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError("every source needs at least one row")
    if strategy == "proportional":
        p = n
    elif strategy == "temperature":
        p = n ** (1.0 / float(temperature))
    elif strategy == "round_robin":
        p = np.ones_like(n)
    else:
        raise ValueError(f"unknown sampling strategy '{strategy}' (one of {', '.join(STRATEGIES)})")
    return p / p.sum()


def epoch_order(sources: list[int], strategy: str, seed: int, epoch: int = 0, temperature: float = 2.0) -> list[int]:
    """Row indices of one epoch. `sources[i]` is the source of row i."""
    src = np.asarray(sources)
    ids = sorted(set(int(s) for s in src))
    rng = np.random.default_rng([int(seed), int(epoch)])
    total = len(src)
    if len(ids) <= 1 or strategy == "proportional":
        return [int(i) for i in rng.permutation(total)]
    members = {s: np.flatnonzero(src == s) for s in ids}
    if strategy == "round_robin":
        turns = [ids[k % len(ids)] for k in range(total)]
    else:
        shares = source_shares([len(members[s]) for s in ids], strategy, temperature)
        # exact counts per source (largest remainders), then shuffled turns: the shares hold for every epoch,
        # not only on average
        raw = shares * total
        counts = np.floor(raw).astype(int)
        for k in np.argsort(-(raw - counts))[: total - counts.sum()]:
            counts[k] += 1
        turns = list(rng.permutation(np.repeat(ids, counts)))
    cursor = {s: 0 for s in ids}
    perm = {s: rng.permutation(members[s]) for s in ids}
    out = []
    for s in turns:
        s = int(s)
        if cursor[s] == len(perm[s]):  # exhausted: a new pass over the source in a new order
            perm[s], cursor[s] = rng.permutation(members[s]), 0
        out.append(int(perm[s][cursor[s]]))
        cursor[s] += 1
    return out


class SourceMixSampler(Sampler):
    """A torch sampler yielding `epoch_order` for the epoch the Trainer sets (`set_epoch`)."""

    def __init__(self, sources: list[int], strategy: str, seed: int, temperature: float = 2.0):
        self.sources, self.strategy, self.seed, self.temperature = list(sources), strategy, int(seed), temperature
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(epoch_order(self.sources, self.strategy, self.seed, self.epoch, self.temperature))

    def __len__(self) -> int:
        return len(self.sources)
