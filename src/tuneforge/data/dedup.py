"""Exact and near-duplicate detection within the training split and across splits.

Exact duplicates share the normalised text (`text.normalize`). Near-duplicates are found with MinHash + LSH
(`datasketch`) on character 4-gram shingles, so the same code serves English and Chinese, and every LSH
candidate is confirmed with the true Jaccard similarity so the threshold means what it says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tuneforge.data.text import normalize
from tuneforge.errors import ConfigError

SHINGLE = 4
NUM_PERM = 128


@dataclass
class CrossMatch:
    train_index: int
    split: str
    other_index: int
    kind: str  # exact | near
    similarity: float


@dataclass
class DedupResult:
    keep: np.ndarray  # bool per training row
    groups: list[list[int]] = field(default_factory=list)  # duplicate groups in train (size > 1)
    conflicts: list[list[int]] = field(default_factory=list)  # groups whose labels disagree
    cross: list[CrossMatch] = field(default_factory=list)  # train rows duplicating a validation/test row

    def summary(self) -> dict:
        return {
            "train_duplicate_groups": len(self.groups),
            "train_duplicate_rows": int(sum(len(g) - 1 for g in self.groups)),
            "conflicting_groups": len(self.conflicts),
            "cross_split_matches": len(self.cross),
            "cross_split_train_rows": len({m.train_index for m in self.cross}),
            "removed": int((~self.keep).sum()),
        }


def shingles(text: str, n: int = SHINGLE) -> set[str]:
    """Character n-grams of the normalised text (the whole text when shorter than n)."""
    t = normalize(text)
    if len(t) <= n:
        return {t}
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the earliest row is the root, so "keep first" is stable


def _datasketch():
    try:
        import datasketch
    except ImportError:
        from tuneforge.errors import DataError

        raise DataError(
            "near-duplicate detection needs datasketch: pip install datasketch (or set data.clean.dedup=exact)"
        ) from None
    return datasketch


def _minhashes(shingle_sets: list[set[str]]):
    MinHash = _datasketch().MinHash

    # a fixed seed: the same texts always give the same signatures, so results are reproducible
    return MinHash.bulk([[s.encode("utf-8") for s in sh] for sh in shingle_sets], num_perm=NUM_PERM, seed=1)


def _lsh(threshold: float):
    MinHashLSH = _datasketch().MinHashLSH

    # LSH only proposes candidates (each is confirmed with the true Jaccard), so a lower LSH threshold costs a
    # little time and gains recall; above ~0.95 datasketch cannot build enough bands anyway
    return MinHashLSH(threshold=min(0.9, 0.9 * threshold), num_perm=NUM_PERM)


def _check(mode: str, threshold: float) -> None:
    if mode not in ("none", "exact", "near"):
        raise ConfigError(f"data.clean.dedup: unknown mode '{mode}' (use none, exact or near)")
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"data.clean.near_threshold must be in (0, 1], got {threshold}")


def duplicate_groups(texts: Sequence[str], mode: str = "near", threshold: float = 0.85) -> list[list[int]]:
    """Groups (row indices, ascending, size > 1) of texts that are exact or near duplicates of each other.

    Args:
        texts: the texts.
        mode: `exact`, `near` (exact + MinHash near-duplicates) or `none` (no groups).
        threshold: Jaccard similarity of character 4-gram shingles for `near`.

    Raises:
        ConfigError: unknown mode or a threshold outside (0, 1].
    """
    _check(mode, threshold)
    n = len(texts)
    if mode == "none" or n < 2:
        return []
    uf = _UnionFind(n)
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        k = normalize(t)
        if k in first:
            uf.union(first[k], i)
        else:
            first[k] = i
    if mode == "near":
        # only one representative per exact key goes through MinHash
        reps = sorted(first.values())
        sets = [shingles(texts[i]) for i in reps]
        lsh = _lsh(threshold)
        for j, mh in enumerate(_minhashes(sets)):
            for cand in lsh.query(mh):
                if jaccard(sets[j], sets[cand]) >= threshold:
                    uf.union(reps[cand], reps[j])
            lsh.insert(j, mh)
    clusters: dict[int, list[int]] = {}
    for i in range(n):
        clusters.setdefault(uf.find(i), []).append(i)
    return [g for g in clusters.values() if len(g) > 1]


def cross_split_matches(
    train: Sequence[str], others: dict[str, Sequence[str]], mode: str = "near", threshold: float = 0.85
) -> list[CrossMatch]:
    """Training rows that are exact or near copies of a row of another split (one match per train row and split).

    Args:
        train: training texts.
        others: split name -> texts (validation, test).
        mode: `exact`, `near` or `none`.
        threshold: Jaccard similarity for `near`.

    Raises:
        ConfigError: unknown mode or bad threshold.
    """
    _check(mode, threshold)
    out: list[CrossMatch] = []
    if mode == "none":
        return out
    train_sets = [shingles(t) for t in train] if mode == "near" else None
    train_mh = _minhashes(train_sets) if mode == "near" and len(train) else []
    for split, texts in others.items():
        if texts is None or len(texts) == 0:
            continue
        keys = {}
        for j, t in enumerate(texts):
            keys.setdefault(normalize(t), j)
        matched = set()
        for i, t in enumerate(train):
            j = keys.get(normalize(t))
            if j is not None:
                out.append(CrossMatch(i, split, j, "exact", 1.0))
                matched.add(i)
        if mode == "near":
            other_sets = [shingles(t) for t in texts]
            lsh = _lsh(threshold)
            for j, mh in enumerate(_minhashes(other_sets)):
                lsh.insert(j, mh)
            for i, mh in enumerate(train_mh):
                if i in matched:
                    continue
                best = max(((jaccard(train_sets[i], other_sets[j]), j) for j in lsh.query(mh)), default=None)
                if best is not None and best[0] >= threshold:
                    out.append(CrossMatch(i, split, best[1], "near", round(best[0], 4)))
    out.sort(key=lambda m: (m.train_index, m.split))
    return out


def deduplicate(
    texts: Sequence[str],
    labels: Sequence[str],
    others: dict[str, Sequence[str]] | None = None,
    *,
    mode: str = "near",
    threshold: float = 0.85,
    within_train: str = "drop",
    cross_split: str = "drop",
    conflicts: str = "report",
) -> DedupResult:
    """Decide which training rows to keep. Only the training split is ever changed.

    Args:
        texts, labels: the training split (labels as strings).
        others: validation/test texts by split name, for leakage checks.
        mode, threshold: how duplicates are found (see `duplicate_groups`).
        within_train: `drop` keeps the first row of each duplicate group (per label), `report` keeps all.
        cross_split: `drop` removes training rows that copy a validation/test row, `report` keeps them, `none` skips.
        conflicts: for groups with disagreeing labels: `report` (one row per label), `drop` (none), `majority`.

    Raises:
        ConfigError: an unknown option.
    """
    for key, value, allowed in (
        ("within_train", within_train, ("drop", "report")),
        ("cross_split", cross_split, ("drop", "report", "none")),
        ("conflicts", conflicts, ("report", "drop", "majority")),
    ):
        if value not in allowed:
            raise ConfigError(f"data.clean.{key}: unknown value '{value}' (use {', '.join(allowed)})")
    labels = [str(x) for x in labels]
    keep = np.ones(len(texts), dtype=bool)
    groups = duplicate_groups(texts, mode, threshold)
    conflicting = []
    for g in groups:
        glabels = [labels[i] for i in g]
        rows = list(g)
        if len(set(glabels)) > 1:
            conflicting.append(g)
            if conflicts == "drop":
                rows = []
            elif conflicts == "majority":
                counts = {lab: glabels.count(lab) for lab in set(glabels)}
                top = max(counts.values())
                winners = [lab for lab, c in counts.items() if c == top]
                rows = [i for i in g if labels[i] == winners[0]] if len(winners) == 1 else []
        if within_train == "drop":
            seen, firsts = set(), []
            for i in rows:
                if labels[i] not in seen:
                    seen.add(labels[i])
                    firsts.append(i)
            rows = firsts
        keep[[i for i in g if i not in set(rows)]] = False
    cross = cross_split_matches(texts, others or {}, mode, threshold) if cross_split != "none" else []
    if cross_split == "drop":
        keep[[m.train_index for m in cross]] = False
    return DedupResult(keep=keep, groups=groups, conflicts=conflicting, cross=cross)
