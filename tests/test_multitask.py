"""Multi-task training (`task.type: multitask`): the exact loss on hand-built batches (weights, rows without a label,
uncertainty weighting and its gradient), how several data sources are mixed, config and data errors, and tiny
end-to-end runs: through the CLI with every run-directory file, predict / eval / export / serve of the result,
several data files with a multi-label sub-task and learned weights, and two multi-task runs on one base."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from multitask_common import multitask_config, multitask_rows

from conftest import run_cli

IGN = -100.0


# ---- the loss ---------------------------------------------------------------------------------------------------
def _batch():
    from tuneforge.kernels.multitask import HeadLayout

    layouts = [HeadLayout("a", 3, False), HeadLayout("b", 2, True), HeadLayout("c", 2, False)]
    torch.manual_seed(0)
    logits = torch.randn(4, 3 + 2 + 2, requires_grad=True)
    labels = torch.tensor(
        [
            [2, 1, 0, IGN],  # a=2, b={0}, c missing
            [IGN, IGN, IGN, IGN],  # nothing
            [0, IGN, IGN, IGN],  # a=0, b missing
            [1, 1, 1, IGN],
        ]
    )  # a=1, b={0,1}
    return layouts, logits, labels


@pytest.mark.unit
def test_fixed_weights_loss_is_the_weighted_sum_over_labelled_rows():
    from tuneforge.kernels.multitask import multitask_loss

    layouts, logits, labels = _batch()
    loss = multitask_loss(logits, labels, layouts, [2.0, 0.5, 3.0])
    a = F.cross_entropy(logits[[0, 2, 3], 0:3], torch.tensor([2, 0, 1]))
    b = F.binary_cross_entropy_with_logits(logits[[0, 3], 3:5], torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    # c has no labelled row: no term at all
    assert torch.allclose(loss, 2.0 * a + 0.5 * b, atol=1e-6)
    # rows without labels get no gradient; columns of a sub-task without labels neither
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[:, 5:].abs().sum() == 0
    assert logits.grad[2, 3:5].abs().sum() == 0 and logits.grad[2, 0:3].abs().sum() > 0


@pytest.mark.unit
def test_uncertainty_weighting_value_and_gradient():
    from tuneforge.kernels.multitask import multitask_loss, subtask_losses

    layouts, logits, labels = _batch()
    s = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    w = [1.0, 2.0, 1.0]
    loss = multitask_loss(logits, labels, layouts, w, s)
    la, lb, lc = subtask_losses(logits, labels, layouts)
    assert lc is None
    expected = 1.0 * (math.exp(-0.3) * la + 0.15) + 2.0 * (math.exp(0.2) * lb - 0.1)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    # d/ds_i of w_i (exp(-s_i) L_i + s_i / 2) = w_i (1/2 - exp(-s_i) L_i); a sub-task absent from the batch: 0
    want = torch.tensor([1.0 * (0.5 - math.exp(-0.3) * la.item()), 2.0 * (0.5 - math.exp(0.2) * lb.item()), 0.0])
    assert torch.allclose(s.grad, want, atol=1e-6)


@pytest.mark.unit
def test_a_batch_without_any_label_gives_zero_loss_that_still_backpropagates():
    from tuneforge.kernels.multitask import HeadLayout, multitask_loss

    logits = torch.randn(2, 4, requires_grad=True)
    loss = multitask_loss(
        logits, torch.full((2, 2), IGN), [HeadLayout("a", 2, False), HeadLayout("b", 2, False)], [1.0, 1.0]
    )
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


@pytest.mark.unit
def test_decoder_backbone_pools_the_last_real_token(tmp_path):
    from transformers import AutoTokenizer

    from sft_common import make_tiny_llama
    from tuneforge.models.multitask import MultiTaskModel

    path = make_tiny_llama(tmp_path / "llama")
    spec = {"heads": [{"name": "x", "num_labels": 2}, {"name": "y", "num_labels": 3}], "weights": [1, 1]}
    model = MultiTaskModel.from_pretrained(path, multitask=spec).eval()
    assert model.spec["pooling"] == "last"
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    one = tok(["hello there"], return_tensors="pt")
    padded = tok(["hello there", "a much longer text than the first one"], padding=True, return_tensors="pt")
    with torch.no_grad():  # padding on either side does not change a text's answer
        a = model(**one).logits[0]
        b = model(**padded).logits[0]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.unit
def test_model_forward_uses_the_kernel_loss(tiny_bert):
    from transformers import AutoTokenizer

    from tuneforge.kernels.multitask import multitask_loss
    from tuneforge.models.multitask import MultiTaskModel

    spec = {
        "heads": [
            {"name": "x", "num_labels": 3, "multi_label": False},
            {"name": "y", "num_labels": 2, "multi_label": True},
        ],
        "weights": [1.0, 0.5],
        "weighting": "fixed",
    }
    model = MultiTaskModel.from_pretrained(tiny_bert, multitask=spec).eval()
    enc = AutoTokenizer.from_pretrained(tiny_bert)(["good film", "bad plot"], padding=True, return_tensors="pt")
    labels = torch.tensor([[1, 0, 1], [IGN, IGN, IGN]])
    out = model(**enc, labels=labels)
    assert out.logits.shape == (2, 5) and model.spec["pooling"] == "mean" and model.encoder.pooler is None
    assert torch.allclose(out.loss, multitask_loss(out.logits, labels, model.layouts, [1.0, 0.5]))


# ---- mixing several sources ---------------------------------------------------------------------------------------
@pytest.mark.unit
def test_sampling_proportions():
    from tuneforge.data.mixing import SourceMixSampler, epoch_order, source_shares

    sources = [0] * 90 + [1] * 10
    prop = epoch_order(sources, "proportional", seed=1)
    assert sorted(prop) == list(range(100))  # every row exactly once

    temp = epoch_order(sources, "temperature", seed=1, temperature=2.0)
    counts = Counter(sources[i] for i in temp)
    share = source_shares([90, 10], "temperature", 2.0)  # sqrt(90) : sqrt(10) = 3 : 1
    assert np.allclose(share, [0.75, 0.25]) and counts == {0: 75, 1: 25}
    small = [i for i in temp if sources[i] == 1]
    # the small source repeats, but each pass covers all of its rows before any row comes again
    assert sorted(small[:10]) == list(range(90, 100)) and sorted(small[10:20]) == list(range(90, 100))

    rr = epoch_order(sources, "round_robin", seed=1)
    assert [sources[i] for i in rr[:6]] == [0, 1, 0, 1, 0, 1] and Counter(sources[i] for i in rr) == {0: 50, 1: 50}

    # the order depends only on (seed, epoch): a resumed run sees the same rows
    s = SourceMixSampler(sources, "temperature", seed=3)
    first = list(s)
    assert list(SourceMixSampler(sources, "temperature", seed=3)) == first and len(s) == 100
    s.set_epoch(1)
    assert list(s) != first
    with pytest.raises(ValueError, match="unknown sampling"):
        source_shares([1, 2], "bogus")


# ---- config and data errors ---------------------------------------------------------------------------------------
def _validate(raw):
    from tuneforge.config import validate_config

    return validate_config(raw)


@pytest.mark.unit
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["task"].update(tasks={"only": {}}), "at least two sub-tasks"),
        (lambda r: r["task"]["tasks"].update({"bad name": {}}), "sub-task name 'bad name'"),
        (lambda r: r["task"]["tasks"]["polarity"].update(lable_column="x"), "lable_column.*label_column"),
        (lambda r: r["task"]["tasks"]["polarity"].update(metric="acuracy"), "task.tasks.polarity.metric.*accuracy"),
        (
            lambda r: r["task"]["tasks"]["polarity"].update(problem="multi_label", metric="f1_weighted"),
            "not a multi_label metric",
        ),
        (lambda r: r.update(eval={"metric": "polarity_acuracy"}), "eval.metric.*polarity_accuracy"),
        (lambda r: r.update(distill={"teacher": "x"}), "no distillation"),
        (lambda r: r["method"].update(name="prompt"), "does not support task 'multitask'"),
        (lambda r: r["data"].update(label_column="x"), "data.label_column.*classification"),
        (lambda r: r["task"]["tasks"]["polarity"].update(test="t.csv"), "need its own `train` file"),
        (lambda r: r["task"].update(sampling="random"), "task.sampling"),
        (
            lambda r: r["data"].update(text_column="t", text_pair_column="t"),
            "data.text_pair_column: 't' is also data.text_column",
        ),
    ],
)
def test_config_errors_name_the_key(change, message):
    from tuneforge.errors import ConfigError

    raw = multitask_config("m", "d.csv", "out")
    change(raw)
    with pytest.raises(ConfigError, match=message):
        _validate(raw)


@pytest.mark.unit
def test_defaults_are_filled_in():
    cfg = _validate(multitask_config("m", "d.csv", "out"))
    t = cfg.task.tasks
    assert t["polarity"].label_column == "polarity" and t["polarity"].metric == "accuracy"
    assert cfg.eval.metric == "combined" and cfg.data.max_length == 32


@pytest.fixture
def mt_csv(tmp_path) -> str:
    p = tmp_path / "mt.csv"
    pd.DataFrame(multitask_rows(150)).to_csv(p, index=False)
    return str(p)


@pytest.mark.unit
@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda df: df.drop(columns=["polarity"]),
            "no column 'polarity' \\(set by task.tasks.polarity.label_column\\)",
        ),
        (
            lambda df: df.assign(polarity=df["polarity"].map(lambda v: None if v is None or v != v else "positive")),
            "polarity: the training rows have a single class",
        ),
        (lambda df: df.assign(polarity=None), "task.tasks.polarity: no training row has a label"),
    ],
)
def test_data_errors_are_one_line(tiny_bert, mt_csv, tmp_path, edit, message):
    from tuneforge.errors import DataError
    from tuneforge.models.loader import load_tokenizer
    from tuneforge.registry import TASKS

    edit(pd.read_csv(mt_csv)).to_csv(mt_csv, index=False)
    cfg = _validate(multitask_config(tiny_bert, mt_csv, str(tmp_path / "run")))
    with pytest.raises(DataError, match=message):
        TASKS.get("multitask")(cfg).prepare(load_tokenizer(tiny_bert))


@pytest.mark.integration
def test_skipped_and_left_out_rows_are_listed_in_the_data_report(tiny_bert, tmp_path, capsys, caplog):
    """Every row of every file that does not train is counted and listed in data/report.md and report.json: bad
    records under data.bad_records=skip (a multi-task run used to drop them unlisted, issue 33), rows without a
    text and rows without a label for any sub-task."""
    from tuneforge.cli.app import main

    train, val = multitask_rows(90), multitask_rows(30, seed=1)
    train[5]["text"] = ["a", "list"]
    train[8]["text"] = "  "
    train[11].update(subjectivity=None, polarity=None)
    val[2]["text"] = ["another", "list"]
    paths = {}
    for name, rows in (("train", train), ("dev", val)):
        paths[name] = str(tmp_path / f"{name}.jsonl")
        Path(paths[name]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = multitask_config(tiny_bert, paths["train"], str(tmp_path / "run"), "full")
    raw["data"].update(validation=paths["dev"], bad_records="skip")
    raw["train"].update(max_steps=1, eval_strategy="no")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 0, capsys.readouterr().err[-3000:]
    md = (tmp_path / "run" / "data" / "report.md").read_text()
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    t, v = paths["train"], paths["dev"]
    assert f"Read: {t}: 90 rows (3 left out, see below); {v}: 30 rows (1 left out, see below)" in md, md
    assert "## Bad records left out (data.bad_records=skip)" in md, md
    assert f"| {t} | 6 | {t}: row 6: column 'text' (data.text_column) holds a list" in md, md
    assert f"| {v} | 3 | {v}: row 3: column 'text' (data.text_column) holds a list" in md, md
    assert [(r["source"], r["record"]) for r in report["bad_records"]["records"]] == [(t, 6), (v, 3)]
    assert f"| {t} | 9 | empty text (column 'text') |" in md, md
    # the sub-tasks in the order of the config file (yaml.safe_dump writes them sorted)
    assert f"| {t} | 12 | no label for any of its sub-tasks (columns 'polarity', 'subjectivity') |" in md, md
    assert [(r["source"], r["record"]) for r in report["left_out"]] == [(t, 9), (t, 12)]
    assert report["read"] == {t: 90, v: 30}
    for path in (t, v):
        assert f"{path}: data.bad_records=skip: left out 1 rows that cannot be used" in caplog.text


# ---- end to end ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tiny_bert, tmp_path_factory) -> Path:
    """A LoRA multi-task run trained through the CLI."""
    d = tmp_path_factory.mktemp("mt-cli")
    pd.DataFrame(multitask_rows(240)).to_csv(d / "data.csv", index=False)
    raw = multitask_config(tiny_bert, str(d / "data.csv"), str(d / "run"), "lora")
    raw["train"]["epochs"] = 6
    (d / "cfg.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("train", str(d / "cfg.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d / "run"


@pytest.mark.integration
def test_cli_run_writes_every_file(cli_run):
    files = {str(p.relative_to(cli_run)) for p in cli_run.rglob("*") if p.is_file()}
    for f in [
        "config.yaml",
        "status.json",
        "metrics.jsonl",
        "efficiency.json",
        "data/report.md",
        "data/report.json",
        "data/split/split.json",
        "data/split/test.jsonl",
        "data/split/validation.jsonl",
        "eval/metrics.json",
        "eval/report.md",
        "eval/loss_curve.png",
        "model/tuneforge.json",
        "model/adapter_config.json",
        "model/adapter_model.safetensors",
    ] + [
        f"eval/{s}/{f}"
        for s in ("subjectivity", "polarity")
        for f in ("metrics.json", "report.md", "confusion_matrix.png")
    ]:
        assert f in files, f
    assert json.loads((cli_run / "status.json").read_text())["state"] == "completed"
    assert not (cli_run / "checkpoints").exists()
    metrics = json.loads((cli_run / "eval" / "metrics.json").read_text())
    test = metrics["test"]
    assert set(test["tasks"]) == {"subjectivity", "polarity"}
    assert test["combined"] == pytest.approx((test["subjectivity_accuracy"] + test["polarity_accuracy"]) / 2, abs=1e-6)
    # polarity is scored on the reviews only: a third of the rows (the objective ones) have no polarity label
    assert test["tasks"]["polarity"]["n"] < test["tasks"]["subjectivity"]["n"]
    # learnable from a word list (whether LoRA on this tiny random model also learns polarity depends on the seed;
    # test_several_sources_multilabel_and_uncertainty checks that full fine-tuning learns every sub-task)
    assert test["subjectivity_accuracy"] >= 0.9, test
    for line in (cli_run / "data" / "split" / "test.jsonl").read_text().splitlines():
        assert json.loads(line)["polarity"] in (None, "negative", "positive")  # JSON null, never NaN
    meta = json.loads((cli_run / "model" / "tuneforge.json").read_text())
    assert meta["labels"] == {"subjectivity": ["objective", "subjective"], "polarity": ["negative", "positive"]}
    assert "subjectivity" in (cli_run / "data" / "report.md").read_text()


@pytest.mark.integration
def test_predict_and_eval_through_the_cli(cli_run):
    proc = run_cli("predict", str(cli_run), "good great film", "the plot story was")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 2 and set(rows[0]["tasks"]) == {"subjectivity", "polarity"}
    sub = rows[0]["tasks"]["subjectivity"]
    assert sub["label"] in ("objective", "subjective") and sum(sub["probabilities"].values()) == pytest.approx(
        1, abs=1e-4
    )

    proc = run_cli("eval", str(cli_run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads((cli_run / "eval" / "metrics.json").read_text())["test"]
    again = json.loads((cli_run / "eval" / "test-split" / "metrics.json").read_text())["test"]
    assert again["combined"] == pytest.approx(saved["combined"], abs=1e-6)
    assert (cli_run / "eval" / "test-split" / "polarity" / "confusion_matrix.png").is_file()

    proc = run_cli(
        "eval", str(cli_run), "--data", str(cli_run / "data" / "split" / "test.jsonl"), "--label-column", "polarity"
    )
    assert proc.returncode != 0 and "does not apply to a multi-task run" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_export_onnx_has_one_output_per_subtask_and_parity_per_subtask(cli_run, tmp_path):
    import onnxruntime as ort

    from tuneforge.export.exporter import export_run
    from tuneforge.inference import predict

    report = export_run(cli_run, "onnx", tmp_path / "onnx", bench=False)
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    meta = json.loads((cli_run / "model" / "tuneforge.json").read_text())
    assert [o.name for o in session.get_outputs()] == [h["name"] for h in meta["multitask"]["heads"]]
    parity = report["parity"]
    assert set(parity["tasks"]) == {"subjectivity", "polarity"}
    for t in parity["tasks"].values():
        assert t["label_agreement"] == 1.0 and t["max_abs_logit_diff"] < 1e-3
    texts = ["good great film", "the plot story"]
    a, b = predict(cli_run, texts), predict(tmp_path / "onnx", texts)
    for x, y in zip(a, b):
        for name in ("subjectivity", "polarity"):
            assert x["tasks"][name]["label"] == y["tasks"][name]["label"]


@pytest.mark.integration
def test_serve_classify_answers_every_subtask(cli_run):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from serve_common import running_server
    from tuneforge.inference import predict
    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import load_backend

    app = create_app(load_backend(str(cli_run), device="cpu"))
    with running_server(app) as url:
        r = httpx.post(f"{url}/v1/classify", json={"texts": ["good great film", "dull plot"]}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["labels"]["polarity"] == ["negative", "positive"]
    want = predict(cli_run, ["good great film", "dull plot"])
    for got, exp in zip(body["results"], want):
        assert got["tasks"]["polarity"]["label"] == exp["tasks"]["polarity"]["label"]
        assert got["tasks"]["subjectivity"]["probabilities"]["objective"] == pytest.approx(
            exp["tasks"]["subjectivity"]["probabilities"]["objective"], abs=1e-5
        )


@pytest.mark.integration
def test_two_multitask_runs_share_one_base(cli_run, tiny_bert, tmp_path):
    """A second multi-task LoRA run on the same base, served beside the first: each answers as when loaded alone."""
    import tuneforge
    from tuneforge.config import validate_config
    from tuneforge.inference import predict
    from tuneforge.inference.adapters import load_runs

    pd.DataFrame(multitask_rows(90, seed=5)).to_csv(tmp_path / "d.csv", index=False)
    raw = multitask_config(tiny_bert, str(tmp_path / "d.csv"), str(tmp_path / "second"), "lora")
    raw["train"].update(epochs=2, seed=3)
    second = tuneforge.train(validate_config(raw)).run_dir
    runs = load_runs([str(cli_run), str(second)], device="cpu")
    assert runs[0].run.model is runs[1].run.model  # one base model
    texts = ["good great film", "the plot story"]
    for served, path in zip(runs, (cli_run, second)):
        served.activate()
        got, alone = predict(served.run, texts), predict(path, texts)
        for g, a in zip(got, alone):
            assert g["tasks"]["polarity"]["probabilities"]["positive"] == pytest.approx(
                a["tasks"]["polarity"]["probabilities"]["positive"], abs=1e-5
            )


@pytest.mark.integration
def test_several_sources_multilabel_and_uncertainty(tiny_bert, tmp_path):
    """Sub-tasks from two files (the second with its own validation split), a multi-label sub-task, learned
    uncertainty weights and temperature sampling; full fine-tuning learns all three."""
    import tuneforge
    from tuneforge.config import validate_config
    from tuneforge.inference import predict

    rows = multitask_rows(240, tags=True)
    pd.DataFrame([{k: r[k] for k in ("text", "subjectivity", "tags")} for r in rows]).to_csv(
        tmp_path / "a.csv", index=False
    )
    reviews = [{"text": r["text"], "stars": r["polarity"]} for r in multitask_rows(240, seed=3) if r["polarity"]]
    pd.DataFrame(reviews).to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    raw = multitask_config(
        tiny_bert,
        str(tmp_path / "a.csv"),
        str(tmp_path / "run"),
        "full",
        weighting="uncertainty",
        sampling="temperature",
    )
    raw["task"]["tasks"] = {
        "subjectivity": {},
        "tags": {"problem": "multi_label"},
        "polarity": {"train": str(tmp_path / "b.jsonl"), "label_column": "stars", "weight": 2.0},
    }
    raw["train"]["epochs"] = 5
    result = tuneforge.train(validate_config(raw))
    run = result.run_dir
    report = json.loads((run / "data" / "report.json").read_text())
    assert [s["subtasks"] for s in report["sources"]] == [["subjectivity", "tags"], ["polarity"]]
    assert report["subtasks"]["polarity"]["splits"]["train"]["labelled_rows"] == report["sources"][1]["train"]
    test = result.metrics["test"]
    assert test["subjectivity_accuracy"] >= 0.9 and test["polarity_accuracy"] >= 0.8 and test["tags_f1_micro"] >= 0.7, (
        test
    )
    weights = result.metrics["learned_task_weights"]
    assert set(weights) == {"subjectivity", "tags", "polarity"} and any(abs(w - 1.0) > 1e-3 for w in weights.values())
    assert (run / "eval" / "tags" / "confusion_matrix.png").is_file()
    tags = json.loads((run / "eval" / "tags" / "metrics.json").read_text())["test"]
    assert set(tags["per_class"]) == {"cast", "plot"} and "hamming_loss" in tags
    answer = predict(run, ["the plot story and acting was great"])[0]["tasks"]
    assert set(answer["tags"]) == {"labels", "probabilities"} and set(answer["tags"]["probabilities"]) == {
        "cast",
        "plot",
    }


@pytest.mark.integration
def test_resume_with_mixed_sources_matches_the_uninterrupted_run(tiny_bert, tmp_path):
    """Two data files mixed by temperature sampling, full fine-tuning (the model is not a transformers
    PreTrainedModel: the Trainer checkpoints its state dict): resumed in the second epoch, the losses after the
    resumed step and the final metrics are those of the uninterrupted run."""
    from test_resume_exact import _losses, _resume_from, _test_metrics, _train_keeping_checkpoints

    rows = multitask_rows(120)
    pd.DataFrame([{"text": r["text"], "subjectivity": r["subjectivity"]} for r in rows]).to_csv(
        tmp_path / "a.csv", index=False
    )
    reviews = [{"text": r["text"], "polarity": r["polarity"]} for r in multitask_rows(60, seed=4) if r["polarity"]]
    pd.DataFrame(reviews).to_csv(tmp_path / "b.csv", index=False)
    raw = multitask_config(tiny_bert, str(tmp_path / "a.csv"), str(tmp_path / "full"), "full", sampling="temperature")
    raw["task"]["tasks"]["polarity"] = {"train": str(tmp_path / "b.csv")}
    raw["train"].update(
        epochs=2, batch_size=16, eval_strategy="steps", eval_steps=4, save_steps=4, save_total_limit=20, logging_steps=1
    )
    result = _train_keeping_checkpoints(raw)
    total = result.efficiency["global_steps"]
    ckpts = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "full" / "checkpoints").glob("checkpoint-*"))
    later = [c for c in ckpts if total // 2 < c < total]
    assert later, (ckpts, total)
    _resume_from(tmp_path / "full", later[0], tmp_path / "resumed")
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    after = [s for s in full if s > later[0]]
    assert after and all(resumed[s] == full[s] for s in after), [(s, full[s], resumed.get(s)) for s in after][:3]
    assert _test_metrics(tmp_path / "resumed") == _test_metrics(tmp_path / "full")


@pytest.mark.integration
@pytest.mark.parametrize("method", ["lora", "qlora", "full", "freeze", "adapter", "ia3", "prefix"])
def test_every_method_saves_and_reloads_the_heads(method, tiny_bert, mt_csv, tmp_path):
    """Each method trains the shared backbone with the heads (saved with its adapter or the weights): the run
    loaded back scores its saved test split exactly as training did."""
    import tuneforge
    from tuneforge.config import validate_config
    from tuneforge.inference import evaluate

    raw = multitask_config(tiny_bert, mt_csv, str(tmp_path / "run"), method, weighting="uncertainty")
    raw["train"].update(max_steps=3, eval_strategy="no")
    raw["eval"] = {"load_best_model": False}
    result = tuneforge.train(validate_config(raw))
    again = evaluate(result.run_dir)
    trained = result.metrics["test"]
    for key in ("subjectivity_accuracy", "polarity_accuracy", "combined"):
        assert again[key] == pytest.approx(trained[key], abs=1e-6), key
    assert again["tasks"]["polarity"]["per_class"] == trained["tasks"]["polarity"]["per_class"]
