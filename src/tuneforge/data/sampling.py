"""Data order, and per-row random draws, that a resumed run reproduces exactly.

transformers' LengthGroupedSampler draws each epoch's order from the global torch RNG when the epoch starts. An
uninterrupted run reaches epoch 2 with the RNG moved on by epoch 1's dropout; a run resumed inside epoch 2 draws
from wherever its own set-up left the RNG, so it trains on a different order from the resumed step on (measured:
a kill at step 84 of 3 epochs, resumed from step 78, ended 4 accuracy points away). Here each epoch's order comes
from its own generator seeded with (data seed, epoch), which is what accelerate already does for plain shuffling
(`EpochSeeded`, `epoch_seeded`).

The image task's augmentations have the same problem one step further: `EpochIndexSampler` and `seeded_draw`
seed each training row's random draws by (seed, epoch, row)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Sampler


class EpochSeeded(Sampler):
    """Wraps a sampler that shuffles with its `generator` attribute; epoch e shuffles with seed `seed + e`."""

    def __init__(self, inner, seed: int):
        self.inner, self.seed, self.epoch = inner, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.inner.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def epoch_seeded(sampler, seed: int):
    """`sampler` made reproducible per epoch when it shuffles through a `generator` attribute that nothing seeds
    (transformers' LengthGroupedSampler); any other sampler is returned as it is."""
    if (
        sampler is not None
        and hasattr(sampler, "generator")
        and sampler.generator is None
        and not hasattr(sampler, "set_epoch")
    ):
        return EpochSeeded(sampler, seed)
    return sampler


class EpochIndexSampler:
    """A shuffled order of `n` training rows per epoch (seeded by (seed, epoch)) that hands out `epoch * n + row`,
    so the dataset can seed each row's augmentation by (seed, epoch, row) (`seeded_draw`). Augmenting from
    torch's global generator instead ties the images to when the data loader fetched them: a resumed run fetches
    the batch after the checkpoint before the trainer restores the saved generator state, and its images (and
    every random draw after them) differ from the uninterrupted run's."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        base = self.epoch * self.n
        return iter([base + int(i) for i in torch.randperm(self.n, generator=g)])

    def __len__(self) -> int:
        return self.n


def seeded_draw(fn: Callable, seed: int, key: int):
    """`fn()` with torch's global generator seeded by (seed, key) for its duration and restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((int(seed) * 2_654_435_761 + int(key)) % (2**63))
        return fn()
