"""Packing SFT examples into rows, the batch collator, and padding accounting.

A packed row carries `position_ids` that restart at 0 for every example, no attention mask and
`use_cache=False`: transformers' mask builders (masking_utils.find_packed_sequence_indices, used by the sdpa,
eager and flex paths, and only when there is no kv cache) then give each example a causal mask of its own, so
attention and positions never cross an example boundary. The first
label of every example is ignored, so the last token of one example is never trained to predict the next.
"""

from __future__ import annotations

import bisect
import random

import torch

IGNORE = -100


def pack_examples(input_ids: list[list[int]], labels: list[list[int]], max_length: int) -> dict[str, list]:
    """Best-fit-decreasing packing of examples into rows of at most `max_length` tokens.

    Args:
        input_ids, labels: per-example token ids and labels (each no longer than max_length).
        max_length: row capacity.

    Returns columns input_ids, labels, position_ids, length, n_examples (one entry per row)."""
    order = sorted(range(len(input_ids)), key=lambda i: -len(input_ids[i]))
    caps: list[tuple[int, int]] = []  # (remaining capacity, row index), kept sorted
    rows: list[list[int]] = []
    for i in order:
        n = len(input_ids[i])
        j = bisect.bisect_left(caps, (n, -1))
        if j < len(caps):
            cap, r = caps.pop(j)
            rows[r].append(i)
            bisect.insort(caps, (cap - n, r))
        else:
            rows.append([i])
            bisect.insort(caps, (max_length - n, len(rows) - 1))
    out = {"input_ids": [], "labels": [], "position_ids": [], "length": [], "n_examples": []}
    for members in rows:
        ids, labs, pos = [], [], []
        for i in members:
            ids += input_ids[i]
            labs += [IGNORE] + list(labels[i][1:])
            pos += list(range(len(input_ids[i])))
        out["input_ids"].append(ids)
        out["labels"].append(labs)
        out["position_ids"].append(pos)
        out["length"].append(len(ids))
        out["n_examples"].append(len(members))
    return out


class SFTCollator:
    """Right-pads a batch. Unpacked rows get an attention mask; packed rows get position ids (restarting at
    every example, and again for the padding tail, so padding forms a segment of its own) instead."""

    def __init__(self, pad_token_id: int, packed: bool = False):
        self.pad_token_id = pad_token_id
        self.packed = packed

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        b = len(features)
        ids = torch.full((b, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, longest), IGNORE, dtype=torch.long)
        extra = torch.zeros((b, longest), dtype=torch.long)
        for k, f in enumerate(features):
            n = len(f["input_ids"])
            ids[k, :n] = torch.as_tensor(f["input_ids"])
            labels[k, :n] = torch.as_tensor(f["labels"])
            if self.packed:
                extra[k, :n] = torch.as_tensor(f["position_ids"])
                extra[k, n:] = torch.arange(longest - n)
            else:
                extra[k, :n] = 1
        if self.packed:
            # transformers looks for restarting position_ids only without a kv cache, and models create one
            # whenever config.use_cache is true (the default, in training too): without this flag examples
            # in a row would attend to each other
            return {"input_ids": ids, "labels": labels, "position_ids": extra, "use_cache": False}
        return {"input_ids": ids, "labels": labels, "attention_mask": extra}


def padding_fraction(lengths: list[int], batch_size: int, group_by_length: bool, seed: int = 0) -> float:
    """Share of batch tokens that are padding when `lengths` are batched as the Trainer's sampler would
    (random order, or length-grouped mega-batches of 50 batches sorted by length)."""
    if not lengths:
        return 0.0
    idx = list(range(len(lengths)))
    random.Random(seed).shuffle(idx)
    if group_by_length:
        mega = batch_size * 50
        idx = [i for s in range(0, len(idx), mega) for i in sorted(idx[s : s + mega], key=lambda i: -lengths[i])]
    real = padded = 0
    for s in range(0, len(idx), batch_size):
        batch = [lengths[i] for i in idx[s : s + batch_size]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return 1.0 - real / padded if padded else 0.0
