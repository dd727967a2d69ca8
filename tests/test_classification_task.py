import pandas as pd
import pytest

from tuneforge.config import validate_config
from tuneforge.errors import DataError
from tuneforge.models.loader import load_tokenizer
from tuneforge.tasks.classification import ClassificationTask

from conftest import make_sentiment_rows

pytestmark = pytest.mark.unit


def prepare(tiny_bert, data, **data_keys):
    cfg = validate_config({"model": {"name": tiny_bert}, "data": {"train": data, **data_keys}})
    return ClassificationTask(cfg).prepare(load_tokenizer(tiny_bert))


def write(tmp_path, rows, name="d.csv"):
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return str(p)


def test_stratified_split_sizes_and_proportions(tiny_bert, tmp_path):
    rows = make_sentiment_rows(300)[:200] + [r for r in make_sentiment_rows(300)[200:] if r["label"] == "positive"]
    p = prepare(tiny_bert, write(tmp_path, rows), split={"validation": 0.1, "test": 0.2})
    n = len(rows)
    assert p.sizes == {"train": len(p.train), "validation": len(p.validation), "test": len(p.test)}
    assert sum(p.sizes.values()) == n
    assert abs(len(p.test) - 0.2 * n) <= 1 and abs(len(p.validation) - 0.1 * n) <= 1

    def share(ds):
        return sum(ds["labels"]) / len(ds)

    assert abs(share(p.train) - share(p.test)) < 0.03  # stratified


def test_split_is_seeded(tiny_bert, tmp_path):
    path = write(tmp_path, make_sentiment_rows(100))
    a, b = prepare(tiny_bert, path), prepare(tiny_bert, path)
    assert list(a.test["input_ids"]) == list(b.test["input_ids"])
    c = prepare(tiny_bert, path, split={"seed": 123})
    assert list(a.test["input_ids"]) != list(c.test["input_ids"])


def test_group_split_keeps_groups_apart(tiny_bert, tmp_path):
    rows = [dict(r, movie=f"m{i // 4}") for i, r in enumerate(make_sentiment_rows(200))]
    cfg = validate_config(
        {"model": {"name": tiny_bert}, "data": {"train": write(tmp_path, rows), "split": {"group_column": "movie"}}}
    )
    task = ClassificationTask(cfg)
    df = task._read(cfg.data.train)
    rest, test = task._split(df, 0.2, 0, "test")
    assert not set(rest["movie"]) & set(test["movie"])


def test_labels_sorted_and_ints_numeric(tiny_bert, tmp_path):
    rows = [{"text": r["text"], "label": {"negative": 10, "positive": 2}[r["label"]]} for r in make_sentiment_rows(60)]
    p = prepare(tiny_bert, write(tmp_path, rows))
    assert p.state.labels == ["2", "10"]  # numerically, not as strings
    p = prepare(tiny_bert, write(tmp_path, make_sentiment_rows(60), "s.csv"))
    assert p.state.labels == ["negative", "positive"]


def test_given_files_are_used_and_unseen_labels_rejected(tiny_bert, tmp_path):
    train = write(tmp_path, make_sentiment_rows(60), "train.csv")
    test_rows = make_sentiment_rows(10) + [{"text": "meh", "label": "neutral"}]
    with pytest.raises(DataError, match=r"the test data has labels never seen in training: \['neutral'\]"):
        prepare(tiny_bert, train, test=write(tmp_path, test_rows, "test.csv"))
    # seed 1: rows of a different sample; seed 0 would copy training rows, which cleaning removes as leakage
    p = prepare(tiny_bert, train, test=write(tmp_path, make_sentiment_rows(10, seed=1), "t2.csv"))
    assert len(p.test) == 10 and len(p.train) + len(p.validation) == 60


def test_single_class_and_empty(tiny_bert, tmp_path):
    one = [r for r in make_sentiment_rows(40) if r["label"] == "positive"]
    with pytest.raises(DataError, match=r"single class \('positive'\)"):
        prepare(tiny_bert, write(tmp_path, one))
    with pytest.raises(DataError, match="no rows with both a text and a label"):
        prepare(tiny_bert, write(tmp_path, [{"text": None, "label": "a"}, {"text": "x", "label": None}], "e.csv"))


def test_dynamic_lengths_recorded(tiny_bert, tmp_path):
    rows = make_sentiment_rows(40)
    rows[0]["text"] = " ".join(["good film"] * 10)
    rows[1]["text"] = "awful"
    p = prepare(tiny_bert, write(tmp_path, rows), max_length=8, split={"validation": 0.0, "test": 0.0})
    lengths = list(p.train["length"])
    assert max(lengths) == 8  # truncated
    assert len(set(lengths)) > 1  # never padded ahead of batching
    assert lengths == [len(x) for x in p.train["input_ids"]]


def test_max_train_samples_is_stratified(tiny_bert, tmp_path):
    p = prepare(tiny_bert, write(tmp_path, make_sentiment_rows(200)), max_train_samples=20)
    assert len(p.train) == 20 and sum(p.train["labels"]) == 10
