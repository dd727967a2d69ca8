"""EDA augmentation in English and Chinese: determinism, protected tokens, rates, resources, errors."""

import random

import pytest

from tuneforge.data import synonyms
from tuneforge.data.augment import Augmenter, augment_dataset, copies_for
from tuneforge.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

EN = "The acting is wonderful and the story feels honest , but Howard Shore wrote 12 songs for the film ."
ZH = "这部电影的剧情非常精彩，演员的表演也很出色，2019年最好的作品。"
OPS = ["synonym", "insert", "swap", "delete"]

needs_wordnet = pytest.mark.skipif(synonyms.wordnet_dir() is None, reason="WordNet not installed (make install)")
needs_cilin = pytest.mark.skipif(synonyms.cilin_file() is None, reason="Cilin not installed (make install)")


def _words(text):
    return text.split()


@needs_wordnet
@pytest.mark.parametrize("op", OPS)
def test_english_ops_are_seeded_and_change_text(op):
    a = Augmenter(ops=[op], synonym_rate=0.3, insert_rate=0.3, swap_rate=0.3, delete_rate=0.3)
    first = a.augment(EN, random.Random(5), op)
    assert first == a.augment(EN, random.Random(5), op)
    assert first != EN
    outs = {a.augment(EN, random.Random(s), op) for s in range(8)}
    assert len(outs) > 1  # another seed, another copy


@needs_wordnet
@pytest.mark.parametrize("op", OPS)
def test_protected_tokens_never_change(op):
    a = Augmenter(ops=[op], synonym_rate=1.0, insert_rate=0.5, swap_rate=1.0, delete_rate=0.9, protect=["story"])
    for seed in range(10):
        out = a.augment(EN, random.Random(seed), op)
        words = _words(out)
        for kept in ("Howard", "Shore", "12", "story"):
            assert kept in words, (op, out)
        # protected words keep their places relative to each other
        assert words.index("Howard") + 1 == words.index("Shore")


@needs_wordnet
def test_rates_scale_the_number_of_changes():
    small = Augmenter(ops=["synonym"], synonym_rate=0.05)
    large = Augmenter(ops=["synonym"], synonym_rate=0.5)

    def changed(aug):
        out = aug.augment(EN, random.Random(0), "synonym")
        return sum(x != y for x, y in zip(_words(EN), _words(out))) if len(_words(out)) == len(_words(EN)) else 99

    assert changed(small) < changed(large)


def test_delete_keeps_at_least_one_word():
    a = Augmenter(ops=["delete"], delete_rate=1.0)
    for seed in range(5):
        assert a.augment("terrible boring film", random.Random(seed), "delete").strip()


def test_swap_keeps_the_words():
    a = Augmenter(ops=["swap"], swap_rate=0.5)
    out = a.augment(EN, random.Random(1), "swap")
    assert sorted(_words(out)) == sorted(_words(EN)) and out != EN


@needs_cilin
@pytest.mark.parametrize("op", OPS)
def test_chinese_ops(op):
    pytest.importorskip("jieba")
    a = Augmenter(ops=[op], synonym_rate=0.3, insert_rate=0.3, swap_rate=0.3, delete_rate=0.3)
    out = a.augment(ZH, random.Random(3), op)
    assert out == a.augment(ZH, random.Random(3), op)
    assert out != ZH
    assert " " not in out  # Chinese is re-joined without spaces
    assert "2019" in out  # numbers are protected
    if op == "swap":
        assert sorted(out) == sorted(ZH)


@needs_cilin
def test_language_detected_per_example():
    pytest.importorskip("jieba")
    a = Augmenter(ops=["synonym"], synonym_rate=0.5)
    assert a.language_of(ZH) == "zh" and a.language_of(EN) == "en"
    made = augment_dataset([ZH, "Очень хороший фильм"], [2, 2], a, seed=0)
    assert made and {i for i, _, _ in made} == {0}  # the Cyrillic text is skipped, not mangled


def test_augment_dataset_is_reproducible_and_independent_of_other_rows():
    a = Augmenter(ops=["swap", "delete"])
    texts = ["a very dull and tedious movie", "quite a wonderful moving story", "the plot was weak"]
    one = augment_dataset(texts, [2, 1, 1], a, seed=11)
    assert one == augment_dataset(texts, [2, 1, 1], a, seed=11)
    assert one != augment_dataset(texts, [2, 1, 1], a, seed=12)
    # the copies of row 2 do not depend on how many copies row 0 got
    assert [x for x in one if x[0] == 2] == [x for x in augment_dataset(texts, [0, 1, 1], a, seed=11) if x[0] == 2]


def test_copies_for_multipliers():
    labels = ["a"] * 100 + ["b"] * 10
    c = copies_for(labels, 0.5, {"b": 3}, seed=0)
    assert c == copies_for(labels, 0.5, {"b": 3}, seed=0)
    assert all(x == 3 for x in c[100:])
    assert 30 < sum(c[:100]) < 70 and set(c[:100]) <= {0, 1}
    with pytest.raises(ConfigError, match="num_per_example must not be negative"):
        copies_for(labels, -1, None, 0)


def test_errors_are_clear(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="unsupported language 'fr'"):
        Augmenter(language="fr")
    with pytest.raises(ConfigError, match=r"data.augment.swap_rate must be between 0 and 1, got 1.5"):
        Augmenter(swap_rate=1.5)
    with pytest.raises(ConfigError, match="unknown operation 'shuffle'"):
        Augmenter(ops=["shuffle"])
    with pytest.raises(ConfigError, match="synonym_senses must be 0"):
        Augmenter(synonym_senses=-2)
    with pytest.raises(DataError, match="unsupported script"):
        Augmenter().augment("Очень хороший фильм", random.Random(0))
    with pytest.raises(DataError, match="English synonyms need WordNet"):
        synonyms.english_synonyms(str(tmp_path))
    monkeypatch.setenv("TUNEFORGE_CILIN", str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="Chinese synonyms need the Cilin thesaurus"):
        synonyms.chinese_synonyms(None)
    with pytest.raises(ConfigError, match="no translation model is configured"):
        augment_dataset(["x y"], [1], Augmenter(ops=["back_translation"]), 0)


def test_config_errors_name_the_key():
    from tuneforge.config import load_config

    with pytest.raises(ConfigError, match="data.augment.language"):
        load_config(raw={"data": {"augment": {"language": "fr"}}})
    with pytest.raises(ConfigError, match="data.augment.delete_rate"):
        load_config(raw={"data": {"augment": {"delete_rate": -0.1}}})
    with pytest.raises(ConfigError, match="data.augment.synonym_senses"):
        load_config(raw={"data": {"augment": {"synonym_senses": -1}}})
    with pytest.raises(ConfigError, match="no translation models are configured"):
        load_config(raw={"data": {"augment": {"enabled": True, "ops": ["back_translation"]}}})


@needs_wordnet
def test_frequent_senses_leave_out_rare_synonyms():
    every = synonyms.english_synonyms(senses=0)
    common = synonyms.english_synonyms(senses=2)
    # every sense: the EDA paper's dictionary, rare senses and proper names included
    assert {"with child", "enceinte", "outstanding"} <= set(every["great"])
    assert "c. h. best" in every["best"] and "commodity" in every["good"]
    # two most frequent senses per part of speech: the everyday meanings stay, the rare ones go
    assert "outstanding" in common["great"] and not {"with child", "enceinte"} & set(common["great"])
    assert "c. h. best" not in common["best"] and "commodity" not in common["good"]
    assert {"movie", "motion picture"} <= set(common["film"])
    assert all(set(common[w]) <= set(every[w]) for w in list(common)[:5000])
    assert len(common) < len(every)


def test_frequent_senses_need_the_index_files(tmp_path):
    import shutil

    src = synonyms.wordnet_dir()
    if src is None:
        pytest.skip("WordNet not installed (make install)")
    for pos in ("noun", "verb", "adj", "adv"):
        shutil.copy(src / f"data.{pos}", tmp_path / f"data.{pos}")
    assert synonyms.english_synonyms(str(tmp_path), senses=0)  # data files alone: every sense still works
    with pytest.raises(DataError, match="synonym_senses=0"):
        synonyms.english_synonyms(str(tmp_path), senses=2)


@needs_wordnet
@pytest.mark.parametrize("op", OPS)
def test_negations_are_protected(op):
    text = "The plot is not clever and the jokes aren't funny , it never works ."
    on = Augmenter(ops=[op], synonym_rate=1.0, insert_rate=0.5, swap_rate=1.0, delete_rate=0.9)
    off = Augmenter(
        ops=[op], synonym_rate=1.0, insert_rate=0.5, swap_rate=1.0, delete_rate=0.9, protect_negations=False
    )
    lost = 0
    for seed in range(20):
        words = _words(on.augment(text, random.Random(seed), op))
        neg = [w for w in words if w in ("not", "aren't", "never")]
        assert neg == ["not", "aren't", "never"], (op, seed, words)  # present, in their order
        kept = _words(off.augment(text, random.Random(seed), op))
        lost += [w for w in kept if w in ("not", "aren't", "never")] != ["not", "aren't", "never"]
    if op in ("swap", "delete"):
        assert lost > 0  # without the protection these operations do move or delete them


def test_chinese_negations_are_protected():
    pytest.importorskip("jieba")
    text = "这部电影不好看，没有意思，从不推荐给朋友"
    a = Augmenter(ops=["delete"], delete_rate=0.9, language="zh")
    for seed in range(10):
        out = a.augment(text, random.Random(seed), "delete")
        assert "不" in out and "没有" in out and "从不" in out, out
