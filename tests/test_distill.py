"""Knowledge distillation (issue 18) on tiny models: a classification teacher run teaches a student cut from the
base (kept layers) through the CLI, with unlabelled texts; teacher outputs are cached and reused on resume; a
teacher that cannot teach is one clear line before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

import tuneforge
from tuneforge.config import load_config
from tuneforge.errors import ConfigError, DataError

from conftest import make_sentiment_rows, run_cli, tiny_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("distill-data")
    rows = make_sentiment_rows(160)
    pd.DataFrame(rows).to_csv(d / "train.csv", index=False)
    pd.DataFrame([{"text": r["text"] + " indeed"} for r in make_sentiment_rows(24)]).to_csv(
        d / "unlabeled.csv", index=False
    )
    return {"train": str(d / "train.csv"), "unlabeled": str(d / "unlabeled.csv"), "dir": d}


def _cfg(tiny_bert, data, out, method="full", **distill):
    raw = tiny_config(tiny_bert, data["train"], str(out), method=method)
    raw["data"]["clean"] = {"label_noise": "none"}
    raw["train"].update({"epochs": 2, "eval_strategy": "no"})
    raw["eval"] = {"load_best_model": False}
    if distill:
        raw["distill"] = distill
    return raw


def train_cli(raw: dict, yaml_path: Path):
    """`tuneforge train` on `raw` written to `yaml_path`, as a user runs it; the finished process."""
    yaml_path.write_text(yaml.safe_dump(raw))
    r = run_cli("train", str(yaml_path))
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def teacher(tiny_bert, data) -> Path:
    return tuneforge.train(load_config(raw=_cfg(tiny_bert, data, data["dir"] / "teacher"))).run_dir


def test_student_from_kept_layers_learns_from_the_teacher_through_the_cli(tiny_bert, data, teacher, tmp_path):
    raw = _cfg(
        tiny_bert,
        data,
        tmp_path / "student",
        method="lora",
        teacher=str(teacher),
        temperature=2.0,
        alpha=0.8,
        unlabeled=data["unlabeled"],
    )
    raw["model"]["keep_layers"] = [1]
    r = train_cli(raw, tmp_path / "student.yaml")
    assert "24 unlabelled texts labelled by the teacher" in r.stderr
    run = tmp_path / "student"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    block = metrics["distill"]
    assert block["split"] == "test" and 0.0 <= block["agreement_with_teacher"] <= 1.0
    assert block["student"]["parameters"] < block["teacher"]["parameters"]
    assert block["teacher"]["accuracy"] == pytest.approx(
        json.loads((teacher / "eval" / "metrics.json").read_text())["test"]["accuracy"]
    )
    report = (run / "eval" / "report.md").read_text()
    assert "## Teacher and student (test split)" in report and "| parameters |" in report
    assert (run / "distill" / "teacher_outputs.npz").is_file()
    meta = json.loads((run / "model" / "tuneforge.json").read_text())
    assert meta["keep_layers"] == [1]
    # the student loads (its base cut the same way) and predicts like the training run measured
    preds = tuneforge.predict(run, ["a good film", "a bad film"])
    assert {p["label"] for p in preds} <= {"negative", "positive"}
    assert tuneforge.evaluate(run)["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


def test_teacher_outputs_are_cached_and_reused_on_resume(tiny_bert, data, teacher, tmp_path, monkeypatch):
    import transformers

    from tuneforge.training import distill

    calls = []
    real = distill.Teacher.logits

    def counting(self, texts, pairs=None, batch_size=64):
        calls.append(len(texts))
        return real(self, texts, pairs, batch_size)

    monkeypatch.setattr(distill.Teacher, "logits", counting)
    raw = _cfg(tiny_bert, data, tmp_path / "s", teacher=str(teacher))
    raw["train"].update({"max_steps": 4, "save_steps": 2})
    steps = {"n": 0}
    real_step = transformers.Trainer.training_step

    def stop_at_three(self, *a, **k):
        steps["n"] += 1
        if steps["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(transformers.Trainer, "training_step", stop_at_three)
    with pytest.raises(KeyboardInterrupt):
        tuneforge.train(load_config(raw=raw))
    assert len(calls) == 1  # the training texts, once
    monkeypatch.setattr(transformers.Trainer, "training_step", real_step)
    res = tuneforge.train(load_config(raw=raw), resume=True)
    assert len(calls) == 2  # only the test split for the report: the training targets came from the cache
    assert json.loads((res.run_dir / "status.json").read_text())["state"] == "completed"


def test_a_teacher_that_cannot_teach_is_one_line_before_training(tiny_bert, data, teacher, tmp_path):
    base = _cfg(tiny_bert, data, tmp_path / "x")
    with pytest.raises(ConfigError, match=r"^invalid config: distill\.teacher: .*missing-dir is not a directory"):
        load_config(raw={**base, "distill": {"teacher": str(tmp_path / "missing-dir")}})
    running = tmp_path / "running"
    running.mkdir()
    (running / "status.json").write_text(json.dumps({"state": "running"}))
    with pytest.raises(ConfigError, match=r"has not finished \(state: running\)"):
        load_config(raw={**base, "distill": {"teacher": str(running)}})
    sft_like = tmp_path / "sft"
    (sft_like / "model").mkdir(parents=True)
    (sft_like / "model" / "tuneforge.json").write_text(json.dumps({"task": "causal_lm"}))
    with pytest.raises(ConfigError, match=r"is a 'causal_lm' run; this run's task.type is 'classification'"):
        load_config(raw={**base, "distill": {"teacher": str(sft_like)}})
    for key, value, msg in (
        ("alpha", 1.5, "less than or equal to 1"),
        ("temperature", 0, "greater than 0"),
        ("divergence", "jsd", "not used by the classification task"),
    ):
        with pytest.raises(ConfigError, match=rf"distill\.{key}: .*{msg}"):
            load_config(raw={**base, "distill": {"teacher": str(teacher), key: value}})
    with pytest.raises(ConfigError, match=r"data\.balance\.class_weights: not applied by the distillation loss"):
        load_config(
            raw={
                **base,
                "data": {**base["data"], "balance": {"class_weights": "balanced"}},
                "distill": {"teacher": str(teacher)},
            }
        )
    with pytest.raises(ConfigError, match=r"distill\.unlabeled: needs distill\.teacher"):
        load_config(raw={**base, "distill": {"unlabeled": data["unlabeled"]}})
    with pytest.raises(ConfigError, match=r"model\.keep_layers: .*empty list"):
        load_config(raw={**base, "model": {"name": tiny_bert, "keep_layers": []}})


def test_labels_that_differ_and_layers_out_of_range_stop_before_training(tiny_bert, data, teacher, tmp_path):
    other = tmp_path / "other.csv"
    rows = make_sentiment_rows(60)
    for r in rows:
        r["label"] = {"negative": "bad", "positive": "good"}[r["label"]]
    pd.DataFrame(rows).to_csv(other, index=False)
    raw = _cfg(tiny_bert, {"train": str(other)}, tmp_path / "a", teacher=str(teacher))
    with pytest.raises(DataError, match=r"distill\.teacher: its labels \['negative', 'positive'\] differ"):
        tuneforge.train(load_config(raw=raw))
    assert not (tmp_path / "a" / "checkpoints").exists()
    raw = _cfg(tiny_bert, data, tmp_path / "b", teacher=str(teacher))
    raw["model"]["keep_layers"] = [0, 5]
    r = run_cli("train", "--help")  # the CLI is importable; the error itself through the API:
    assert r.returncode == 0
    with pytest.raises(ConfigError, match=r"model\.keep_layers: layer 5 is out of range for a model with 2 layers"):
        tuneforge.train(load_config(raw=raw))


# ---- causal LMs ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft(tmp_path_factory) -> dict:
    from sft_common import chat_rows, make_tiny_llama, write_jsonl

    d = tmp_path_factory.mktemp("distill-sft")
    base = make_tiny_llama(d / "base4", num_layers=4)
    data = write_jsonl(d / "chat.jsonl", chat_rows(30))

    def raw(out, **distill):
        cfg = {
            "model": {"name": base},
            "data": {"train": data, "max_length": 64, "split": {"validation": 0.2, "test": 0.0}},
            "task": {"type": "causal_lm", "report_prompts": 0, "generation": {"temperature": 0.0, "max_new_tokens": 6}},
            "method": {"name": "lora", "r": 4},
            "eval": {"load_best_model": False},
            "train": {
                "max_steps": 4,
                "batch_size": 8,
                "learning_rate": 5e-3,
                "report_to": "none",
                "eval_strategy": "no",
                "logging_steps": 1,
            },
            "output": {"dir": str(out)},
        }
        if distill:
            cfg["distill"] = distill
        return cfg

    teacher = tuneforge.train(load_config(raw=raw(d / "teacher"))).run_dir
    return {"raw": raw, "teacher": teacher, "dir": d}


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_token_level_distillation_of_a_chat_model(sft, tmp_path, divergence):
    raw = sft["raw"](tmp_path / "s", teacher=str(sft["teacher"]), divergence=divergence, alpha=0.5)
    raw["model"]["keep_layers"] = 2
    if divergence == "forward_kl":  # one of them through the CLI, as a user runs it
        train_cli(raw, tmp_path / "kd.yaml")
        run_dir = tmp_path / "s"
    else:
        run_dir = tuneforge.train(load_config(raw=raw)).run_dir
    block = json.loads((run_dir / "eval" / "metrics.json").read_text())["distill"]
    assert block["split"] == "validation" and 0.0 <= block["agreement_with_teacher"] <= 1.0
    assert block["student"]["parameters"] < block["teacher"]["parameters"]
    assert block["teacher"]["loss"] > 0 and block["student"]["loss"] > 0
    losses = [
        json.loads(l)["loss"]
        for l in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in l and '"eval_' not in l
    ]
    assert losses and all(v == v and v >= 0 for v in losses)  # the distillation loss trained, finite
    assert isinstance(tuneforge.chat(run_dir, "who are you", temperature=0, max_new_tokens=3), str)


def test_token_level_needs_a_shared_vocabulary_and_sequence_level_does_not(sft, tmp_path):
    from sft_common import make_tiny_llama, make_tokenizer

    other_tok = make_tokenizer()
    other_tok.add_tokens(["zebra", "quasar"])
    other = make_tiny_llama(tmp_path / "other-base", tokenizer=other_tok)
    raw = sft["raw"](tmp_path / "s", teacher=str(sft["teacher"]))
    raw["model"]["name"] = other
    with pytest.raises(
        ConfigError,
        match=r"distill\.teacher: the teacher's tokenizer \(\d+ tokens\) differs from "
        r"the student's \(\d+\); .*set distill\.mode: sequence",
    ):
        tuneforge.train(load_config(raw=raw))
    raw = sft["raw"](tmp_path / "seq", teacher=str(sft["teacher"]), mode="sequence")
    raw["model"]["name"] = other
    r = train_cli(raw, tmp_path / "seq.yaml")
    assert "the teacher answers 24 training prompts" in r.stderr
    run = tmp_path / "seq"
    answers = json.loads((run / "distill" / "teacher_answers.json").read_text())["outputs"]
    assert len(answers) == 24 and all(isinstance(a, str) for a in answers)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["data"]["distill"] == {"mode": "sequence", "teacher_answers": 24}
    assert metrics["distill"]["agreement_with_teacher"] is None  # different vocabularies
    assert "different vocabularies" in (run / "eval" / "report.md").read_text()


def test_hidden_state_matching_for_a_student_cut_from_the_teacher(tiny_bert, data, teacher, tmp_path):
    import torch

    from tuneforge.inference import load_run
    from tuneforge.models.shrink import keep_layers
    from tuneforge.tasks.classification_distill import hidden_match_loss

    # the loss itself: a student that is the teacher with every block kept matches it exactly; cut, it does not
    t = load_run(teacher).model
    enc = load_run(teacher).tokenizer(["a good film", "a dull plot"], padding=True, return_tensors="pt")
    enc = {k: v for k, v in enc.items() if k != "token_type_ids"}
    same = load_run(teacher).model
    keep_layers(same, [0, 1])
    out = same(**enc, output_hidden_states=True)
    assert float(hidden_match_loss(same, out.hidden_states, t, enc)) == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        same.base_model.encoder.layer[1].output.dense.weight.mul_(1.5)
    out = same(**enc, output_hidden_states=True)
    assert float(hidden_match_loss(same, out.hidden_states, t, enc)) > 1e-6
    # through training: the student is the teacher's model directory with one block kept
    raw = _cfg(tiny_bert, data, tmp_path / "s", teacher=str(teacher), hidden_weight=1.0)
    raw["model"].update(name=str(teacher / "model"), keep_layers=[1])
    res = tuneforge.train(load_config(raw=raw))
    assert "distill" in json.loads((res.run_dir / "eval" / "metrics.json").read_text())
    # block matching is a classification key
    with pytest.raises(ConfigError, match=r"distill\.hidden_weight: not used by the causal_lm task"):
        load_config(raw={"task": {"type": "causal_lm"}, "distill": {"hidden_weight": 1.0}})


def test_compare_accepts_distillation_runs(tiny_bert, data, teacher, tmp_path):
    from tuneforge.compare import compare

    raw = _cfg(tiny_bert, data, tmp_path / "unused", teacher=str(teacher))
    raw["model"]["keep_layers"] = 1
    cfg = tmp_path / "kd.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    result = compare(
        str(cfg), "full,lora", seeds="1", max_steps=2, out=tmp_path / "cmp", isolate=False, echo=lambda s: None
    )
    for run in result.runs:
        metrics = json.loads((run.path / "eval" / "metrics.json").read_text())
        assert "distill" in metrics and (run.path / "distill" / "teacher_outputs.npz").is_file()
    assert "| full |" in (tmp_path / "cmp" / "report.md").read_text()
