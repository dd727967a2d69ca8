"""The data pipeline inside a classification run: train-only changes, determinism, the run's data/report.md,
and the `tuneforge data inspect|prepare` commands."""

import json

import pandas as pd
import pytest

from tuneforge.config import load_config
from tuneforge.tasks.classification import ClassificationTask

from conftest import make_sentiment_rows, tiny_config

needs_wordnet = pytest.mark.skipif(
    __import__("tuneforge.data.synonyms", fromlist=["x"]).wordnet_dir() is None, reason="WordNet not installed"
)


def _write(tmp_path, rows, name):
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return str(p)


def _frames(tiny_bert, data, **data_keys):
    cfg = load_config(raw={"model": {"name": tiny_bert}, "data": {"train": data, **data_keys}})
    train, val, test, report, labels = ClassificationTask(cfg).prepare_frames()
    return train, val, test, {"data_report": report, "labels": labels}


@pytest.mark.unit
@needs_wordnet
def test_augmentation_and_balancing_touch_train_only(tiny_bert, tmp_path):
    rows = make_sentiment_rows(120)
    rows = [r for i, r in enumerate(rows) if r["label"] == "positive" or i % 4 == 0]  # imbalanced 60:15
    data = _write(tmp_path, rows, "d.csv")
    off = _frames(tiny_bert, data, clean={"dedup": "none", "label_noise": "none"})
    on = _frames(
        tiny_bert,
        data,
        clean={"label_noise": "none"},
        augment={"enabled": True, "num_per_example": 1, "per_class": {"negative": 3}},
        balance={"sampling": "oversample", "class_weights": "balanced"},
    )
    again = _frames(
        tiny_bert,
        data,
        clean={"label_noise": "none"},
        augment={"enabled": True, "num_per_example": 1, "per_class": {"negative": 3}},
        balance={"sampling": "oversample", "class_weights": "balanced"},
    )
    for k in (1, 2):  # validation and test are exactly what the split made
        pd.testing.assert_frame_equal(off[k].reset_index(drop=True), on[k].reset_index(drop=True))
    pd.testing.assert_frame_equal(on[0], again[0])  # same seed, same augmented data
    train, info = on[0], on[3]
    assert train["augmentation"].notna().sum() > len(off[0])
    counts = train["label"].value_counts()
    assert counts["negative"] == counts["positive"]  # oversampled to parity
    steps = [s["step"] for s in info["data_report"]["steps"]]
    assert steps == ["deduplicate", "augment", "oversample"]
    assert set(info["data_report"]["class_weights"]) == {"negative", "positive"}
    # no augmented text leaks into validation/test
    assert not set(train["text"]) & set(on[2]["text"])


@pytest.mark.unit
def test_leaked_rows_leave_train_but_test_is_untouched(tiny_bert, tmp_path):
    train_rows = make_sentiment_rows(60)
    test_rows = make_sentiment_rows(10, seed=1) + [
        dict(train_rows[0]),
        {**train_rows[1], "text": train_rows[1]["text"].upper()},
    ]
    tr, _, te, info = _frames(
        tiny_bert,
        _write(tmp_path, train_rows, "tr.csv"),
        test=_write(tmp_path, test_rows, "te.csv"),
        split={"validation": 0.0},
        clean={"label_noise": "none"},
    )
    assert len(te) == 12
    assert len(tr) == 58 and train_rows[0]["text"] not in set(tr["text"])
    assert info["data_report"]["duplicates"]["cross_split_train_rows"] == 2
    tr2, *_ = _frames(
        tiny_bert,
        _write(tmp_path, train_rows, "tr.csv"),
        test=_write(tmp_path, test_rows, "te.csv"),
        split={"validation": 0.0},
        clean={"label_noise": "none", "cross_split": "report"},
    )
    assert len(tr2) == 60


@pytest.mark.integration
def test_run_writes_data_report_and_uses_class_weights(tiny_bert, tmp_path):
    import tuneforge

    rows = make_sentiment_rows(240)
    for r in rows[::20]:  # 12 wrong labels for the detector to report
        r["label"] = "positive" if r["label"] == "negative" else "negative"
    raw = tiny_config(tiny_bert, _write(tmp_path, rows, "d.csv"), str(tmp_path / "run"), method="full")
    raw["data"]["balance"] = {"class_weights": {"negative": 2.0}}
    raw["train"].update({"max_steps": 2, "epochs": 1})
    cfg = load_config(raw=raw)
    task = ClassificationTask(cfg)
    from tuneforge.models.loader import load_tokenizer

    prepared = task.prepare(load_tokenizer(tiny_bert))
    assert task.loss_function(prepared) is not None
    res = tuneforge.train(cfg)
    report = (res.run_dir / "data" / "report.md").read_text()
    for heading in (
        "## Splits",
        "## Length in tokens",
        "## What cleaning and augmentation did",
        "## Duplicates",
        "## Suspected label errors",
        "Class weights in the loss: negative: ",
    ):
        assert heading in report
    assert (res.run_dir / "data" / "class_distribution.png").stat().st_size > 1000
    data = json.loads((res.run_dir / "data" / "report.json").read_text())
    assert data["class_weights"]["negative"] / data["class_weights"]["positive"] == pytest.approx(2.0, rel=1e-3)
    # every suspect is listed for review beside the report (report.json keeps the summary and a few examples)
    suspects = pd.read_json(res.run_dir / "data" / "label_suspects.jsonl", lines=True)
    noise = data["label_noise"]
    assert "all" not in noise and len(suspects) == noise["suspects"] >= 1, noise
    assert set(suspects.columns) >= {"text", "given", "suggested", "confidence", "given_prob", "acted"}
    assert not suspects["acted"].any()  # label_noise: report changes nothing
    flipped = {r["text"] for r in rows[::20]}
    assert all(t in flipped for t in suspects["text"]), suspects
    assert "`label_suspects.jsonl`" in report


@pytest.mark.unit
def test_cli_inspect_and_prepare(tiny_bert, tmp_path, capsys):
    from tuneforge.cli.app import main

    rows = make_sentiment_rows(80) + [{"text": "quite a wonderful moving story", "label": "positive"}] * 3
    data = _write(tmp_path, [{"review": r["text"], "label": r["label"]} for r in rows], "reviews.csv")
    assert (
        main(
            [
                "data",
                "inspect",
                data,
                "data.text_column=review",
                f"model.name={tiny_bert}",
                "--out",
                str(tmp_path / "rep"),
            ]
        )
        == 0
    )
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "tokens of" in md and "duplicate groups inside train" in md and "## Suspected label errors" in md
    assert (tmp_path / "rep" / "token_lengths.png").exists()

    out = tmp_path / "prepared"
    assert (
        main(
            [
                "data",
                "prepare",
                data,
                "data.text_column=review",
                f"model.name={tiny_bert}",
                "data.clean.label_noise=none",
                "--out",
                str(out),
                "--format",
                "both",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    train = pd.read_json(out / "train.jsonl", lines=True)
    assert len(train) == manifest["rows"]["train"] and (out / "test.parquet").exists()
    assert (out / "report.md").exists()
    # the written files train as they are
    tr, va, te, _ = _frames(
        tiny_bert,
        str(out / "train.jsonl"),
        validation=str(out / "validation.jsonl"),
        test=str(out / "test.jsonl"),
        text_column="review",
        clean={"dedup": "none", "label_noise": "none"},
    )
    assert (len(tr), len(va), len(te)) == (
        manifest["rows"]["train"],
        manifest["rows"]["validation"],
        manifest["rows"]["test"],
    )

    capsys.readouterr()
    assert main(["data", "prepare", data, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists and is not empty" in err[0]
    assert main(["data", "inspect", str(tmp_path / "missing.csv")]) == 3
    assert "data file not found" in capsys.readouterr().err


@pytest.mark.unit
def test_relabelled_suspects_are_marked_in_the_suspects_list(tiny_bert, tmp_path):
    rows = make_sentiment_rows(120)
    for r in rows[::10]:
        r["label"] = "positive" if r["label"] == "negative" else "negative"
    tr, _, _, info = _frames(
        tiny_bert,
        _write(tmp_path, rows, "d.csv"),
        clean={"dedup": "none", "label_noise": "relabel", "noise_threshold": 0.0},
    )
    noise = info["data_report"]["label_noise"]
    assert noise["acted_on"] > 0 and len(tr) == info["data_report"]["before"]["rows"]
    acted = [s for s in noise["all"] if s["acted"]]
    assert len(acted) == noise["acted_on"]
    given = dict(zip(tr["text"], tr["label"]))
    assert all(given[s["text"]] == s["suggested"] for s in acted)


@pytest.mark.integration
@pytest.mark.parametrize("features", ["model", "both", "finetune"])
def test_label_noise_with_model_features_goes_through_the_run_config(tiny_bert, tmp_path, features):
    data = _write(tmp_path, make_sentiment_rows(120), "d.csv")
    tr, _, _, info = _frames(
        tiny_bert,
        data,
        clean={
            "dedup": "none",
            "label_noise": "drop",
            "noise_folds": 2,
            "noise_features": features,
            "noise_threshold": 0.0,
        },
    )
    noise = info["data_report"]["label_noise"]
    assert noise["features"] == features and noise["skipped"] is None
    assert noise["detector_oof_accuracy"] is not None
    assert len(tr) == info["data_report"]["before"]["rows"] - noise["acted_on"]
    # the suspects list marks exactly the dropped rows
    assert sum(s["acted"] for s in noise["all"]) == noise["acted_on"] and not set(tr["text"]) & {
        s["text"] for s in noise["all"] if s["acted"]
    }
    # the report names the detector that was used
    from tuneforge.data.report import write_report

    md = write_report(tmp_path / "rep", info["data_report"], plots=False).read_text()
    assert {
        "model": "regression on sentence embeddings",
        "both": "averaged",
        "finetune": "fine-tuned once per fold (2 folds)",
    }[features] in md
    assert len((tmp_path / "rep" / "label_suspects.jsonl").read_text().splitlines()) == noise["suspects"]
    with pytest.raises(Exception, match="noise_features"):
        load_config(raw={"data": {"clean": {"noise_features": "bert"}}})
