"""The reward task (Bradley-Terry reward models): its loss equals TRL 1.16's RewardTrainer.compute_loss on the same
rewards and on the same model and batch, its config is strict, pairs carry their margins, and end to end on the tiny
Llama (LoRA, chat template) and the tiny BERT (full, text pairs) a run learns a consistent preference, writes its
metrics and reports, predicts one score per text, scores (prompt, completion) as it was trained, merges and exports to
ONNX with the same scores."""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from preference_common import DISLIKED, LIKED, pair_rows
from sft_common import write_jsonl

from conftest import run_cli


def reward_config(model: str, data: str, out: str, method: str = "lora", **task) -> dict:
    """A raw config for a fast reward run on a tiny model (`task` adds task keys)."""
    return {
        "model": {"name": model},
        "data": {"train": data, "max_length": 128, "split": {"validation": 0.2, "test": 0.2}},
        "task": {"type": "reward", "report_pairs": 3, **task},
        "method": {"name": method},
        "train": {"epochs": 3, "batch_size": 4, "learning_rate": 1e-2, "logging_steps": 2, "report_to": "none"},
        "output": {"dir": out},
    }


def api_train(cfg: dict, *overrides: str):
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    return train(load_config(raw=cfg, overrides=list(overrides)))


def trl_loss(model, inputs: dict, center: float | None) -> torch.Tensor:
    """TRL 1.16's own RewardTrainer.compute_loss (trl/trainer/reward_trainer.py) on `model` and `inputs`, called with
    the few trainer attributes it reads (evaluation mode, one process)."""
    from trl.trainer.reward_trainer import RewardTrainer

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=False),
        args=SimpleNamespace(center_rewards_coefficient=center),
        accelerator=SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    return RewardTrainer.compute_loss(trainer, model, dict(inputs))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    rows = pair_rows(40)
    for i, r in enumerate(rows):
        r["margin"] = 0.5 if i % 2 else 0.0  # TRL's optional margin column
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", rows)


@pytest.fixture(scope="module")
def rm_run(tiny_llama, pairs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "run"
    api_train(reward_config(tiny_llama, pairs_file, str(out)))
    return out


@pytest.fixture(scope="module")
def loaded(rm_run):
    from tuneforge.inference import load_run

    return load_run(rm_run, device="cpu")


PROMPTS = ["Tell me about tea number 99.", [{"role": "user", "content": "Tell me about salt number 5."}]]
ANSWERS = [LIKED, DISLIKED]


# ---- the loss -----------------------------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("with_margin", [False, True])
@pytest.mark.parametrize("center", [None, 0.01])
def test_loss_equals_trls_reward_trainer(with_margin, center):
    from tuneforge.kernels.reward import bradley_terry_loss

    torch.manual_seed(0)
    chosen, rejected, margin = torch.randn(6) * 2, torch.randn(6) * 2, torch.rand(6)
    logits = torch.cat([chosen, rejected]).unsqueeze(-1)  # one forward pass: 2 x B rows, chosen first
    inputs = {"input_ids": torch.zeros(12, 3, dtype=torch.long), "attention_mask": torch.ones(12, 3, dtype=torch.long)}
    if with_margin:
        inputs["margin"] = margin
    expected = trl_loss(lambda **kw: SimpleNamespace(logits=logits), inputs, center)
    ours = bradley_terry_loss(chosen, rejected, margin if with_margin else None, center)
    assert ours.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    stats = ours.stats()
    assert stats["reward_accuracy"] == pytest.approx(float((chosen > rejected).float().mean()))
    assert stats["reward_margin"] == pytest.approx(float((chosen - rejected).mean()), abs=1e-6)


@pytest.mark.unit
def test_training_loss_equals_trl_on_the_same_model_and_batch(tiny_llama, pairs_file):
    """The task's loss (collator + one forward pass + kernel) on the tiny Llama scorer: TRL's compute_loss on the same
    model, token ids and margins gives the same loss; gradients flow to the score head."""
    from transformers import AutoTokenizer

    from tuneforge.config import load_config
    from tuneforge.models.loader import load_model
    from tuneforge.registry import TASKS

    cfg = load_config(raw=reward_config(tiny_llama, pairs_file, "unused", center_rewards_coefficient=0.01))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    task = TASKS.get("reward")(cfg)
    prepared = task.prepare(tok)
    batch = task.collator(tok)([prepared.train[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 8 and batch["labels"].tolist() == [
        prepared.train[i]["margin"] for i in range(4)
    ]
    torch.manual_seed(0)
    model = load_model(tiny_llama, task.auto_class(), "float32", **task.model_kwargs(prepared))
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    loss, outputs = task.training_loss(prepared)(model, batch)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "margin": batch["labels"]}
    with torch.no_grad():
        expected = trl_loss(model, inputs, 0.01)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert outputs["chosen_rewards"].shape == (4,)
    loss.backward()
    assert model.score.weight.grad is not None and model.score.weight.grad.abs().sum() > 0


@pytest.mark.unit
def test_rewards_are_two_halves_of_one_column():
    from tuneforge.kernels.reward import bradley_terry_loss, split_rewards

    c, r = split_rewards(torch.arange(6.0).unsqueeze(-1))
    assert c.tolist() == [0.0, 1.0, 2.0] and r.tolist() == [3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="one output per row"):
        split_rewards(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="2 x B"):
        split_rewards(torch.zeros(3))
    half = bradley_terry_loss(torch.tensor([1.0], dtype=torch.bfloat16), torch.tensor([0.0], dtype=torch.bfloat16))
    assert half.loss.dtype == torch.float32


# ---- config and data ----------------------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize(
    "task, data, message",
    [
        ({}, {"format": "kto"}, r"^invalid config: data\.format: kto holds unpaired answers .* use auto, alpaca"),
        ({"loss": "dpo"}, {}, r"task\.loss: unknown key"),
        ({"center_rewards_coefficient": -1}, {}, r"task\.center_rewards_coefficient: Input should be greater"),
        ({}, {"max_prompt_length": 128}, r"max_prompt_length=128 leaves no room"),
        ({}, {"packing": True}, r"data\.packing: only used by the causal_lm task"),
        ({}, {"clean": {"dedup": "none"}}, r"data\.clean: only used by the classification"),
    ],
)
def test_config_is_strict_in_one_line(tiny_llama, task, data, message):
    from tuneforge.config import load_config
    from tuneforge.errors import ConfigError

    raw = reward_config(tiny_llama, "x.jsonl", "out", **task)
    raw["data"].update(data)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(raw=raw)
    assert "\n" not in str(exc.value).strip()


@pytest.mark.unit
def test_defaults_and_registration(tiny_llama):
    from tuneforge.config import load_config
    from tuneforge.registry import TASKS

    raw = reward_config(tiny_llama, "x.jsonl", "out")
    del raw["data"]["max_length"]
    cfg = load_config(raw=raw)
    assert (cfg.eval.metric, cfg.data.max_length, cfg.data.max_prompt_length) == ("reward_accuracy", 512, 256)
    task = TASKS.get("reward")
    assert "rm" in task.aliases and task.rows_per_example == 2 and task.metrics["reward_accuracy"] is True
    assert task.auto_class_name == TASKS.get("classification").auto_class_name


@pytest.mark.unit
def test_margins_bad_margins_and_unpaired_files(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    from tuneforge.config import load_config
    from tuneforge.errors import DataError
    from tuneforge.registry import TASKS

    rows = pair_rows(20)
    rows[3]["margin"] = 1.5
    rows[6]["margin"] = "much"
    for r in rows:
        r.setdefault("margin", 0)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    raw = reward_config(tiny_llama, data, "out")
    with pytest.raises(DataError, match=r"record 7: the margin \(field 'margin'\) must be a number"):
        TASKS.get("reward")(load_config(raw=raw)).prepare(tok)
    raw["data"]["bad_records"] = "skip"
    prepared = TASKS.get("reward")(load_config(raw=raw)).prepare(tok)
    assert [r["record"] for r in prepared.report["bad_records"]["records"]] == [7]
    margins = [r["margin"] for split in ("validation", "test") for r in prepared.held_out[split]]
    margins += list(prepared.train["margin"])
    assert sorted(margins)[-1] == 1.5 and len(margins) == 19
    unpaired = [{"prompt": r["prompt"], "completion": r["chosen"], "label": True} for r in pair_rows(10)]
    raw["data"]["train"] = write_jsonl(tmp_path / "kto.jsonl", unpaired)
    with pytest.raises(DataError, match=r"holds unpaired records .* the reward task needs pairs"):
        TASKS.get("reward")(load_config(raw=raw)).prepare(tok)


@pytest.mark.unit
def test_runs_of_other_tasks_do_not_score():
    from tuneforge.errors import ModelError
    from tuneforge.tasks.hooks import InferenceHooks

    with pytest.raises(ModelError, match=r"task 'classification' does not score answers"):
        InferenceHooks().score(SimpleNamespace(meta={"task": "classification"}), ["p"], ["a"])


# ---- a finished run -----------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_lora_reward_model_learns_and_writes_the_run(rm_run):
    metrics = json.loads((rm_run / "eval" / "metrics.json").read_text())
    test = metrics["test"]
    assert test["pairs"] == 8 and test["reward_accuracy"] == 1.0 and test["reward_margin"] > 0, test
    logged = [json.loads(line) for line in (rm_run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_reward_accuracy" in row for row in logged)
    report = (rm_run / "eval" / "report.md").read_text()
    assert "| reward_accuracy | 100.0% |" in report and "| prompt | chosen answer | r_chosen |" in report
    assert report.count(f"| {LIKED} |") == 3
    assert "## Preference pairs" in (rm_run / "data" / "report.md").read_text()
    meta = json.loads((rm_run / "model" / "tuneforge.json").read_text())
    assert meta["labels"] == ["score"] and meta["scoring"] == "template" and meta["pad_token_id"] is not None
    assert "score" in json.loads((rm_run / "model" / "adapter_config.json").read_text())["modules_to_save"]


@pytest.mark.integration
def test_predict_serve_and_score_agree(rm_run, loaded):
    from fastapi.testclient import TestClient

    from tuneforge.inference import predict, score, task_of
    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import ClassifierBackend

    texts = task_of(loaded).inference.scored_texts(loaded, PROMPTS, ANSWERS)
    assert texts[0].endswith(f"{LIKED}<|im_end|>\n") and "Tell me about tea number 99." in texts[0]
    scores = score(loaded, PROMPTS, ANSWERS)
    rows = predict(loaded, texts)
    assert [r["score"] for r in rows] == pytest.approx(scores, abs=1e-5) and scores[0] > scores[1]
    r = run_cli("predict", str(rm_run), *texts)
    assert r.returncode == 0, r.stderr[-1000:]
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 2 and [x["score"] for x in lines] == pytest.approx(scores, abs=1e-5)
    with TestClient(create_app([ClassifierBackend(loaded, "rm")])) as c:
        got = c.post("/v1/classify", json={"texts": texts}).json()
    assert got["labels"] == ["score"] and [x["score"] for x in got["results"]] == pytest.approx(scores, abs=1e-5)


@pytest.mark.integration
def test_merged_lora_reward_model_scores_as_the_run(rm_run, loaded, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.inference import score, task_of

    r = run_cli("merge", str(rm_run), "--out", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr[-1000:]
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    texts = task_of(loaded).inference.scored_texts(loaded, PROMPTS, ANSWERS)
    with torch.no_grad():
        got = merged(**tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")).logits[:, 0]
    assert got.tolist() == pytest.approx(score(loaded, PROMPTS, ANSWERS), abs=1e-4)


@pytest.mark.integration
def test_onnx_export_outputs_scores_with_parity(rm_run, loaded, tmp_path):
    import onnxruntime

    from tuneforge.export.exporter import export_run
    from tuneforge.inference import load_run, predict, task_of

    report = export_run(rm_run, "onnx", tmp_path / "onnx", bench=False, max_samples=4)
    p = report["parity"]
    assert p["pairs"] == 4 and p["max_abs_logit_diff"] < 1e-4 and p["pair_order_agreement"] == 1.0, p
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["scores"]
    texts = task_of(loaded).inference.scored_texts(loaded, PROMPTS, ANSWERS)
    exported = [r["score"] for r in predict(load_run(tmp_path / "onnx"), texts)]
    assert exported == pytest.approx([r["score"] for r in predict(loaded, texts)], abs=1e-4)


@pytest.mark.integration
def test_an_encoder_scores_prompt_and_answer_as_a_text_pair(tiny_bert, pairs_file, tmp_path):
    import tuneforge
    from tuneforge.errors import DataError, ModelError
    from tuneforge.inference import classify_logits, load_run, score, task_of

    out = tmp_path / "bert"
    api_train(reward_config(tiny_bert, pairs_file, str(out), method="full"), "train.learning_rate=5e-3")
    test = json.loads((out / "eval" / "metrics.json").read_text())["test"]
    assert test["reward_accuracy"] == 1.0, test
    run = load_run(out, device="cpu")
    assert run.meta["scoring"] == "pair" and run.meta["template"] is None
    got = score(run, PROMPTS, ANSWERS)
    pairs = classify_logits(run, ["Tell me about tea number 99.", "Tell me about salt number 5."], ANSWERS)[:, 0]
    assert got == pytest.approx(pairs.tolist(), abs=1e-6) and got[0] > got[1]
    with pytest.raises(ModelError, match="scores prompt and answer as a text pair"):
        task_of(run).inference.scored_texts(run, PROMPTS, ANSWERS)
    with pytest.raises(DataError, match=r"prompt 1 is \d+ tokens, longer than the run's data\.max_prompt_length=64"):
        score(run, ["tea " * 80], [LIKED])
    # `tuneforge eval RUN`: the saved test split scored again, as the final evaluation did
    again = tuneforge.evaluate(out)
    assert again["pairs"] == 8 and again["reward_margin"] == pytest.approx(test["reward_margin"], abs=1e-5)


@pytest.mark.integration
def test_a_reward_run_is_a_grpo_reward(tiny_llama, rm_run, loaded, tmp_path):
    """`task.rewards: [{run: ...}]`: the reward run scores as `score` does (loaded once, on the first score), and a
    GRPO run trains with it; another task's run, a missing one and an unfinished one are one-line config errors."""
    from tuneforge.data.reward_functions import RewardSet
    from tuneforge.errors import ConfigError
    from tuneforge.inference import run_scorer, score

    loads = []

    def counting(path):
        loads.append(path)
        return run_scorer(path, device="cpu")

    rs = RewardSet([{"run": str(rm_run), "weight": 2.0}, {"name": "length", "target": 10}], score_run=counting)
    assert rs.names == ["run", "length"] and loads == []  # nothing is loaded to check the spec
    prompts = [f"Tell me about topic {i}." for i in range(3)]
    completions = [f"{LIKED} is what I think." for _ in range(2)] + [f"{DISLIKED} is the answer."]
    got = rs(prompts, completions)
    expected = score(loaded, prompts, completions)
    assert got.per_reward["run"] == pytest.approx(expected, abs=1e-5)
    assert got.total[0] == pytest.approx(2.0 * expected[0] + got.per_reward["length"][0], abs=1e-5)
    rs(prompts, completions)
    assert len(loads) == 1

    other = tmp_path / "clf"
    (other / "model").mkdir(parents=True)
    (other / "model" / "tuneforge.json").write_text(json.dumps({"task": "classification"}))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "status.json").write_text(json.dumps({"state": "running"}))
    for spec, message in [
        ({"run": str(other)}, "is a classification run, not a reward model"),
        ({"run": str(tmp_path / "nowhere")}, "no run at"),
        ({"run": str(unfinished)}, "holds no trained model"),
        ({"run": str(rm_run), "column": "x"}, "a run reward takes `run` and `weight` only"),
        ({"run": ""}, "run: give the directory of a finished reward run"),
    ]:
        with pytest.raises(ConfigError, match="task.rewards\\[0\\]: ") as err:
            RewardSet([spec])
        assert message in str(err.value) and "\n" not in str(err.value)

    prompts_file = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Tell me about topic {i}."} for i in range(12)])
    out = tmp_path / "grpo"
    cfg = {
        "model": {"name": tiny_llama},
        "data": {"train": prompts_file, "max_length": 64, "split": {"validation": 0.2, "test": 0.0}},
        "task": {
            "type": "grpo",
            "num_generations": 4,
            "max_new_tokens": 8,
            "rewards": [{"run": str(rm_run)}],
            "report_samples": 1,
            "compare_base": False,
        },
        "method": {"name": "lora"},
        "train": {"max_steps": 2, "batch_size": 2, "logging_steps": 1, "report_to": "none"},
        "output": {"dir": str(out)},
    }
    api_train(cfg)
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in logged if "rewards/run" in r and "loss" in r]
    assert len(steps) == 2 and all(r["rewards/run"] != 0.0 for r in steps)
    assert "reward_run" in json.loads((out / "eval" / "metrics.json").read_text())["validation"]["greedy"]


@pytest.mark.integration
def test_the_web_ui_predict_page_scores_answers_to_a_prompt(rm_run, loaded):
    """Predict page: a reward run's score is the prediction; with a prompt, each line is scored as an answer to it,
    exactly as `score` does; without one, each line is scored as it is (`predict`)."""
    pytest.importorskip("gradio")
    from tuneforge.inference import predict, score
    from tuneforge.webui.model_pages import ModelCache, predict_rows, runs_with
    from tuneforge.webui.workspace import Workspace

    ws = Workspace(rm_run.parent, [rm_run.parent], cwd=rm_run.parent)
    assert rm_run.name in runs_with(ws, "classify")
    answers = [f"{LIKED} is what I think.", f"{DISLIKED} is the answer."]
    table, _ = predict_rows(ws, ModelCache(), rm_run.name, "\n".join(answers), "en", None, "Tell me about topic 3.")
    want = score(loaded, ["Tell me about topic 3."] * 2, answers)
    assert list(table.iloc[:, 1]) == pytest.approx([round(x, 4) for x in want], abs=1e-4)
    table, _ = predict_rows(ws, ModelCache(), rm_run.name, answers[0], "en")
    assert table.iloc[0, 1] == pytest.approx(round(predict(loaded, [answers[0]])[0]["score"], 4), abs=1e-4)
