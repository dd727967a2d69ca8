"""Data order that a resumed run reproduces exactly.

transformers' LengthGroupedSampler draws each epoch's order from the global torch RNG when the epoch starts. An
uninterrupted run reaches epoch 2 with the RNG moved on by epoch 1's dropout; a run resumed inside epoch 2 draws
from wherever its own set-up left the RNG, so it trains on a different order from the resumed step on (measured:
a kill at step 84 of 3 epochs, resumed from step 78, ended 4 accuracy points away). Here each epoch's order comes
from its own generator seeded with (data seed, epoch), which is what accelerate already does for plain shuffling."""

from __future__ import annotations

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
