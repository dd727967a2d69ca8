"""Tiny end-to-end runs through the real CLI and API: the run-directory contract, predict, eval, resume."""

import json

import pandas as pd
import pytest
import yaml

from conftest import make_sentiment_rows, run_cli, tiny_config

pytestmark = pytest.mark.integration

CONTRACT = [
    "config.yaml",
    "status.json",
    "metrics.jsonl",
    "efficiency.json",
    "eval/metrics.json",
    "eval/report.md",
    "eval/confusion_matrix.png",
    "model/tuneforge.json",
]
EFFICIENCY_KEYS = {
    "train_seconds",
    "train_samples_per_second",
    "train_tokens_per_second",
    "peak_rss_mb",
    "trainable_params",
    "total_params",
    "trainable_percent",
}


@pytest.mark.parametrize(
    "method, weights",
    [("lora", ["adapter_config.json", "adapter_model.safetensors"]), ("full", ["config.json", "model.safetensors"])],
)
def test_cli_train_writes_the_whole_contract(tiny_bert, sentiment_csv, tmp_path, write_yaml, method, weights):
    out = tmp_path / "run"
    cfg = write_yaml(tiny_config(tiny_bert, sentiment_csv, str(out), method=method))
    proc = run_cli("train", cfg, "train.logging_steps=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel in CONTRACT + [f"model/{w}" for w in weights]:
        assert (out / rel).is_file(), rel
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["method"]["name"] == method and resolved["train"]["logging_steps"] == 3  # override applied
    eff = json.loads((out / "efficiency.json").read_text())
    assert EFFICIENCY_KEYS <= set(eff) and eff["train_samples_per_second"] > 0 and eff["peak_rss_mb"] > 0
    if method == "lora":
        assert eff["trainable_percent"] < 50
    else:
        assert eff["trainable_params"] == eff["total_params"]
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows) and any("eval_accuracy" in r for r in rows)
    metrics = json.loads((out / "eval/metrics.json").read_text())
    test = metrics["test"]
    for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "auc_roc"):
        assert 0.0 <= test[k] <= 1.0
    assert test["accuracy"] >= 0.9, test  # the tiny task is learnable: the pipeline really trains
    assert set(test["per_class"]) == {"negative", "positive"}
    assert sum(map(sum, test["confusion_matrix"])) == test["n"] == 24
    assert "eval progress" not in proc.stderr and "eval  epoch" in proc.stderr
    assert (out / "eval/confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "model/tuneforge.json").read_text())["labels"] == ["negative", "positive"]
    if method == "full":  # a plain transformers checkpoint carries the label map itself
        assert json.loads((out / "model/config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}

    # predict: JSON lines with label and probabilities
    proc = run_cli("predict", str(out), "a great and wonderful film", "boring and awful acting")
    assert proc.returncode == 0, proc.stderr
    preds = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [p["label"] for p in preds] == ["positive", "negative"]
    assert abs(sum(preds[0]["probabilities"].values()) - 1) < 1e-4

    # predict --file (.txt and .csv) and eval --data on new labelled data
    txt = tmp_path / "texts.txt"
    txt.write_text("superb moving story\ndull tedious plot\n")
    proc = run_cli("predict", str(out), "--file", str(txt))
    assert [json.loads(l)["label"] for l in proc.stdout.splitlines()] == ["positive", "negative"]
    new = tmp_path / "new.csv"
    pd.DataFrame(make_sentiment_rows(30, seed=99)).to_csv(new, index=False)
    proc = run_cli("eval", str(out), "--data", str(new))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] >= 0.9
    assert (out / "eval/new/report.md").is_file() and (out / "eval/new/confusion_matrix.png").is_file()

    # cells that are not one text / one label are one clear line (exit 3), in predict --file and eval --data
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"text": ["fine film", "dull"], "label": [["positive", "negative"], ["negative"]]}).to_parquet(bad)
    proc = run_cli("eval", str(out), "--data", str(bad))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error: ")]) == 1
    assert "row 1: column 'label'" in proc.stderr and "not one label" in proc.stderr
    pd.DataFrame({"text": [["a", "list"], ["fine"]]}).to_parquet(bad)
    proc = run_cli("predict", str(out), "--file", str(bad))
    assert proc.returncode == 3 and "not a text" in proc.stderr, proc.stderr


def test_lora_adapter_loads_with_stock_peft(tiny_bert, sentiment_csv, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import tuneforge
    from tuneforge.config import validate_config

    out = tmp_path / "run"
    tuneforge.train(validate_config(tiny_config(tiny_bert, sentiment_csv, str(out))))
    tok = AutoTokenizer.from_pretrained(out / "model")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    stock = PeftModel.from_pretrained(base, out / "model").eval()
    ours = tuneforge.load_run(out)
    enc = tok(["a great film", "awful plot"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(stock(**enc).logits, ours.model(**enc).logits, atol=1e-6)


def test_same_config_and_seed_give_same_metrics(tiny_bert, sentiment_csv, tmp_path):
    import tuneforge
    from tuneforge.config import validate_config

    results = [
        tuneforge.train(
            validate_config(tiny_config(tiny_bert, sentiment_csv, str(tmp_path / f"r{i}"), train__epochs=1))
        )
        for i in range(2)
    ]
    assert results[0].metrics["test"]["accuracy"] == results[1].metrics["test"]["accuracy"]
    a = json.loads((tmp_path / "r0/metrics.jsonl").read_text().splitlines()[0])
    b = json.loads((tmp_path / "r1/metrics.jsonl").read_text().splitlines()[0])
    assert a["loss"] == b["loss"]


def test_resume_continues_from_last_checkpoint(tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    """An interrupted run resumes from its last checkpoint and ends where an uninterrupted run ends."""
    import tuneforge
    from tuneforge.config import validate_config
    from tuneforge.training import callbacks

    extra = dict(
        train__max_steps=8,
        train__eval_strategy="steps",
        train__eval_steps=2,
        train__save_steps=2,
        train__save_total_limit=10,
    )
    ref = tuneforge.train(validate_config(tiny_config(tiny_bert, sentiment_csv, str(tmp_path / "ref"), **extra)))

    out = tmp_path / "run"
    cfg = validate_config(tiny_config(tiny_bert, sentiment_csv, str(out), **extra))
    original = callbacks.MetricsLogCallback.on_step_end

    def crash(self, args, state, control, **kw):
        if state.global_step == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.MetricsLogCallback, "on_step_end", crash, raising=False)
    with pytest.raises(KeyboardInterrupt):
        tuneforge.train(cfg)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and not (out / "model").exists()
    assert (out / "checkpoints/checkpoint-4").is_dir()
    monkeypatch.setattr(callbacks.MetricsLogCallback, "on_step_end", original, raising=False)

    with pytest.raises(Exception, match="already exists"):  # never overwritten silently
        tuneforge.train(cfg)
    res = tuneforge.train(cfg, resume=True)
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 8 and 5 not in [s for s in steps if s > 4][:0]
    assert res.metrics["test"]["accuracy"] == ref.metrics["test"]["accuracy"]
    assert res.efficiency["global_steps"] == 8
    with pytest.raises(Exception, match="already completed"):
        tuneforge.train(cfg, resume=True)


def test_early_stopping_stops_and_keeps_the_best(tiny_bert, sentiment_csv, tmp_path):
    """With a rate too small to change anything, accuracy never improves: training stops after `patience`
    evaluations without improvement instead of running all epochs."""
    import tuneforge
    from tuneforge.config import validate_config

    cfg = validate_config(
        tiny_config(
            tiny_bert,
            sentiment_csv,
            str(tmp_path / "run"),
            method="full",
            train__learning_rate=1e-12,
            train__epochs=10,
            train__eval_strategy="steps",
            train__eval_steps=2,
            train__early_stopping={"patience": 2},
        )
    )
    res = tuneforge.train(cfg)
    assert res.efficiency["global_steps"] == 6  # evals at 2, 4, 6: no improvement after the first, then stop
    assert res.efficiency["epochs"] < 1


def test_gradient_checkpointing_and_accumulation(tiny_bert, sentiment_csv, tmp_path):
    import tuneforge
    from tuneforge.config import validate_config

    for method in ("lora", "full"):
        cfg = validate_config(
            tiny_config(
                tiny_bert,
                sentiment_csv,
                str(tmp_path / method),
                method=method,
                train__gradient_checkpointing=True,
                train__gradient_accumulation_steps=2,
                train__max_steps=3,
            )
        )
        res = tuneforge.train(cfg)
        assert res.efficiency["global_steps"] == 3
        assert res.efficiency["train_samples"] > 0
