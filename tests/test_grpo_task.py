"""The GRPO task end to end on the tiny Llama: the mean reward of a reward the model can learn rises; with beta > 0
the logged KL is 0 at the first step and positive after; num_iterations reuses each generation; a killed and resumed
run repeats the uninterrupted one (the sampling RNG included); reward failures are one line (or scored 0 and
counted); the config is strict; the finished run chats and merges; builtin:arithmetic trains with exact_answer."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sft_common import write_jsonl

from conftest import REPO, run_cli

LIKES_A = (
    "def likes_a(prompts, completions, **fields):\n    return [c.count('a') / max(1, len(c)) for c in completions]\n"
)


def api_train(cfg, *overrides):
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    return train(load_config(raw=cfg, overrides=list(overrides)))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("grpo-data")
    (d / "likes.py").write_text(LIKES_A)
    rows = [{"prompt": f"Say something about topic {i}.", "answer": str(i)} for i in range(40)]
    return Path(write_jsonl(d / "prompts.jsonl", rows))


def grpo_config(model: str, data: Path, out: str, method: str = "full", **task) -> dict:
    reward = str(data.parent / "likes.py") + ":likes_a"
    return {
        "model": {"name": model},
        "data": {"train": str(data), "max_length": 64, "split": {"validation": 0.1, "test": 0.1}},
        "task": {
            "type": "grpo",
            "num_generations": 8,
            "max_new_tokens": 12,
            "rewards": [{"name": reward}],
            "report_samples": 1,
            "compare_base": False,
            **task,
        },
        "method": {"name": method},
        "train": {"epochs": 4, "batch_size": 4, "learning_rate": 3e-2, "logging_steps": 1, "report_to": "none"},
        "output": {"dir": out},
    }


def _logs(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


@pytest.mark.integration
def test_the_mean_reward_rises_and_the_run_reports_it(tiny_llama, prompts, tmp_path, capfd):
    out = tmp_path / "run"
    api_train(grpo_config(tiny_llama, prompts, str(out)))
    rewards = [r["reward"] for r in _logs(out) if "reward" in r and "loss" in r]
    assert len(rewards) == 32
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > 3 * first, rewards
    logged = _logs(out)[0]
    for key in (
        "reward_std",
        "frac_reward_zero_std",
        "completion_length",
        "truncated_fraction",
        "rewards/likes_a",
        "entropy",
    ):
        assert key in logged
    assert 0 < logged["entropy"] <= math.log(512)  # nats: at most ln(vocabulary); the tiny tokenizer has ~400
    err = capfd.readouterr().err
    assert "grpo step 1: 32 completions in" in err and "grpo step 32:" in err
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["test"]
    assert metrics["prompts"] == 4 and {"greedy", "sampled"} <= set(metrics)
    report = (out / "eval" / "report.md").read_text()
    assert "best and worst sampled answer" in report and "by training step" in report
    from tuneforge.evaluation.plots import read_loss_history

    assert len(read_loss_history(out / "metrics.jsonl")["reward"]) == 32  # the reward panel of eval/loss_curve.png
    assert (out / "eval" / "loss_curve.png").is_file()


@pytest.mark.integration
def test_kl_is_zero_at_the_first_step_and_positive_after_and_iterations_reuse_generations(
    tiny_llama, prompts, tmp_path, capfd
):
    out = tmp_path / "kl"
    cfg = grpo_config(tiny_llama, prompts, str(out), method="lora", beta=0.1, num_iterations=2)
    api_train(cfg, "train.epochs=1")
    logs = [r for r in _logs(out) if "loss" in r]
    assert len(logs) == 16  # 32 prompts, 4 per batch, each batch twice
    assert logs[0]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert max(r["kl"] for r in logs[2:]) > 1e-4
    assert all("reward" in r for r in logs[::2]) and not any("reward" in r for r in logs[1::2])
    assert capfd.readouterr().err.count("grpo step ") == 8  # one generation per two updates


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


@pytest.mark.integration
def test_kill_9_then_resume_generates_the_same_completions(tiny_llama, prompts, tmp_path):
    raw = grpo_config(tiny_llama, prompts, "unused", method="lora")
    raw["train"].update(epochs=2, eval_strategy="steps", eval_steps=3, save_steps=3)
    raw.pop("output")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "tuneforge", "train", str(cfg)]
    ref = tmp_path / "ref"
    done = subprocess.run([*cmd, f"output.dir={ref}"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [*cmd, f"output.dir={run}"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    ckpt = run / "checkpoints"
    while proc.poll() is None and time.time() < deadline:
        if ckpt.is_dir() and any((c / "tuneforge-complete.json").is_file() for c in ckpt.glob("checkpoint-*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = subprocess.run([*cmd, f"output.dir={run}", "--resume"], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    def per_step(r):
        return {x["step"]: (x["reward"], x["loss"]) for x in _logs(r) if "reward" in x and "loss" in x}

    assert per_step(run) == per_step(ref)


@pytest.mark.integration
def test_a_failing_reward_stops_the_run_in_one_line_or_scores_zero(tiny_llama, prompts, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def nan_on_topic_3(prompts, completions, **f):\n"
        "    return [float('nan') if '3' in p[-1]['content'] else 1.0 for p in prompts]\n"
    )
    raw = grpo_config(tiny_llama, prompts, str(tmp_path / "run"), rewards=[{"name": f"{bad}:nan_on_topic_3"}])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    r = run_cli("train", str(cfg), "train.epochs=1")
    assert r.returncode == 3, r.stderr[-1500:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: reward 'nan_on_topic_3'") and "record" in line and "Traceback" not in r.stderr
    r = run_cli("train", str(cfg), "train.epochs=1", "task.reward_errors=zero", "output.overwrite=true")
    assert r.returncode == 0, r.stderr[-1500:]
    errors = [x.get("reward_errors/nan_on_topic_3", 0) for x in _logs(tmp_path / "run")]
    assert sum(errors) > 0


@pytest.mark.unit
@pytest.mark.parametrize(
    "task, message",
    [
        ({"rewards": []}, r"task\.rewards: give at least one reward"),
        ({"rewards": [{"name": "nowhere.py:f"}]}, r"task\.rewards\[0\]"),
        ({"max_new_tokens": 60}, r"exceed data\.max_length=64"),
        ({"reference": "copy"}, r"only used with task\.beta > 0"),
        ({"num_generations": 1}, r"num_generations"),
    ],
)
def test_config_is_strict(tiny_llama, tmp_path, task, message):
    from tuneforge.config import load_config
    from tuneforge.errors import ConfigError

    (tmp_path / "likes.py").write_text(LIKES_A)
    raw = grpo_config(tiny_llama, tmp_path / "p.jsonl", "out", **task)
    raw["data"]["max_prompt_length"] = 32
    with pytest.raises(ConfigError, match=message):
        load_config(raw=raw)


@pytest.mark.unit
def test_accuracy_needs_an_exact_answer_reward(tiny_llama, tmp_path):
    from tuneforge.config import load_config
    from tuneforge.errors import ConfigError

    (tmp_path / "likes.py").write_text(LIKES_A)
    raw = grpo_config(tiny_llama, tmp_path / "p.jsonl", "out")
    raw["eval"] = {"metric": "accuracy"}
    with pytest.raises(ConfigError, match=r"accuracy needs an exact_answer reward"):
        load_config(raw=raw)


@pytest.mark.integration
def test_arithmetic_with_exact_answer_then_chat_and_merge(tiny_llama, tmp_path):
    out = tmp_path / "arith"
    raw = grpo_config(tiny_llama, tmp_path / "unused.jsonl", str(out), method="lora")
    raw["data"]["train"] = "builtin:arithmetic?n=40&steps=1&seed=1"
    raw["task"]["rewards"] = [{"name": "exact_answer"}, {"name": "format", "pattern": r"\d", "weight": 0.1}]
    raw["eval"] = {"metric": "accuracy"}
    api_train(raw, "train.epochs=1", "data.max_length=160")
    test = json.loads((out / "eval" / "metrics.json").read_text())["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and "reward_format" in test
    assert "Read:" in (out / "data" / "report.md").read_text()
    r = run_cli("chat", str(out), "-m", "What is 2 + 3?", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    r = run_cli("merge", str(out), "--out", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
    r = run_cli("export", str(out), "--format", "onnx", "--out", str(tmp_path / "onnx"))
    assert r.returncode == 0, r.stderr[-1500:]


@pytest.mark.unit
def test_the_estimate_counts_every_completion_of_a_group(tiny_llama, tmp_path):
    from tuneforge.config import load_config
    from tuneforge.training.estimate import estimate_memory

    (tmp_path / "likes.py").write_text(LIKES_A)
    raw = grpo_config(tiny_llama, tmp_path / "p.jsonl", "out", num_generations=4)
    grpo = estimate_memory(load_config(raw=raw), device="cpu", batch_size=2, seq_len=64)
    sft_raw = {**raw, "task": {"type": "causal_lm"}}
    sft = estimate_memory(load_config(raw=sft_raw), device="cpu", batch_size=8, seq_len=64)
    assert grpo.activations == sft.activations
    copy = estimate_memory(load_config(raw={**raw, "task": {**raw["task"], "beta": 0.1}}), device="cpu")
    assert copy.weights == 2 * estimate_memory(load_config(raw=raw), device="cpu").weights  # full: a frozen copy
    # the generation's KV cache: 2 (keys, values) x layers x kv heads x head dim x rows x (prompt + new) tokens x 4
    # bytes (fp32: the tiny model is too narrow for bf16) + one float32 row of logits per completion
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(tiny_llama)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rows, tokens = 2 * 4, 52 + 12  # max_prompt_length defaults to max_length - max_new_tokens
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * rows * tokens * 4 + rows * c.vocab_size * 4
    assert grpo.generation == kv and sft.generation == 0
    assert grpo.total == grpo.weights + grpo.gradients + grpo.optimizer + grpo.overhead + max(
        grpo.activations + grpo.logits, kv
    )
    assert "generation (KV cache)" in grpo.table() and "generation" not in sft.table()
