"""Deduplication: normalisation, exact and near duplicates, conflicts, leakage across splits."""

import numpy as np
import pytest

from tuneforge.data.dedup import cross_split_matches, deduplicate, duplicate_groups
from tuneforge.data.text import detect_language, normalize
from tuneforge.errors import ConfigError

pytestmark = pytest.mark.unit

TEXTS = [
    "A gripping, beautifully acted film about grief.",  # 0
    "a gripping,   beautifully acted FILM about grief.",  # 1 exact after normalisation
    "A gripping, beautifully acted film about grief!",  # 2 near (one character)
    "Dull, predictable and far too long.",  # 3
    "The soundtrack alone is worth the ticket price.",  # 4
    "Ｄｕｌｌ, predictable and far too long.",  # 5 full-width: exact after NFKC
]


def test_normalize_folds_case_width_and_space():
    assert normalize("  Ｇｏｏｄ\tMOVIE \n") == "good movie"
    assert normalize("ﬁlm") == "film"  # ligature


def test_detect_language_by_script():
    assert detect_language("这部电影非常好看") == "zh"
    assert detect_language("A fine film") == "en"
    assert detect_language("Очень хороший фильм") == "other"
    assert detect_language("12345 !!") == "other"


def test_exact_and_near_groups():
    assert duplicate_groups(TEXTS, "exact") == [[0, 1], [3, 5]]
    assert sorted(duplicate_groups(TEXTS, "near", 0.85)) == [[0, 1, 2], [3, 5]]
    assert duplicate_groups(TEXTS, "none") == []
    # a high threshold keeps the one-character variant apart
    assert sorted(duplicate_groups(TEXTS, "near", 0.99)) == [[0, 1], [3, 5]]


def test_chinese_near_duplicates():
    zh = [
        "这部电影的剧情非常精彩，演员的表演也很出色。",
        "这部电影的剧情非常精彩，演员的表演也很出色！",
        "今天天气很好，我们去公园散步吧。",
    ]
    assert duplicate_groups(zh, "near", 0.8) == [[0, 1]]


def test_within_train_drop_keeps_first_and_is_deterministic():
    labels = ["pos", "pos", "pos", "neg", "neg", "neg"]
    a = deduplicate(TEXTS, labels, mode="near")
    b = deduplicate(TEXTS, labels, mode="near")
    assert a.keep.tolist() == [True, False, False, True, True, False]
    assert np.array_equal(a.keep, b.keep)
    report = deduplicate(TEXTS, labels, mode="near", within_train="report")
    assert report.keep.all() and len(report.groups) == 2


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("report", [True, False, True, True, True, False]),  # one row per label in the conflicting group
        ("drop", [False, False, False, True, True, False]),  # the whole conflicting group goes
        ("majority", [True, False, False, True, True, False]),  # pos wins 2:1
    ],
)
def test_conflicting_labels(policy, expected):
    labels = ["pos", "pos", "neg", "neg", "neg", "neg"]
    r = deduplicate(TEXTS, labels, mode="near", conflicts=policy)
    assert r.keep.tolist() == expected
    assert r.conflicts == [[0, 1, 2]]


def test_majority_tie_drops_group():
    r = deduplicate(["same text", "Same text"], ["a", "b"], mode="exact", conflicts="majority")
    assert not r.keep.any()


def test_cross_split_leak_removed_from_train_only():
    train = ["An honest, moving portrait of a family.", "Nothing here works at all.", "A film of rare charm."]
    test = ["an honest, moving portrait of a family!", "Completely unrelated review text here."]
    val = ["Nothing here works at all."]
    m = cross_split_matches(train, {"validation": val, "test": test})
    assert [(x.train_index, x.split, x.other_index, x.kind) for x in m] == [
        (0, "test", 0, "near"),
        (1, "validation", 0, "exact"),
    ]
    r = deduplicate(train, ["pos", "neg", "pos"], {"validation": val, "test": test})
    assert r.keep.tolist() == [False, False, True]
    assert len(r.keep) == len(train)  # a mask over train only: validation/test cannot be changed
    kept = deduplicate(train, ["pos", "neg", "pos"], {"test": test}, cross_split="report")
    assert kept.keep.all() and len(kept.cross) == 1


def test_bad_options_are_clear():
    with pytest.raises(ConfigError, match="data.clean.dedup: unknown mode 'fuzzy'"):
        duplicate_groups(TEXTS, "fuzzy")
    with pytest.raises(ConfigError, match="near_threshold"):
        duplicate_groups(TEXTS, "near", 1.5)
    with pytest.raises(ConfigError, match="data.clean.conflicts: unknown value 'vote'"):
        deduplicate(TEXTS, ["a"] * 6, conflicts="vote")
