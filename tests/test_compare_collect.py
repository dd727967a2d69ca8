"""The comparison report from hand-written run directories (no training): grouping by seed, mean and spread,
best and best-value picks for higher- and lower-is-better metrics, runs still training or broken."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit


def fake_run(
    root: Path,
    name: str,
    method: str,
    seed: int,
    metrics: dict | None,
    train_seconds: float = 10.0,
    task: str = "classification",
    metric: str = "accuracy",
    state: str = "completed",
    error=None,
    lr=None,
    extra_eff: dict | None = None,
) -> Path:
    d = root / name
    (d / "eval").mkdir(parents=True)
    cfg = {
        "model": {"name": "m"},
        "task": {"type": task},
        "method": {"name": method},
        "train": {"seed": seed, "learning_rate": lr, "max_steps": 5},
        "eval": {"metric": metric},
        "output": {"dir": str(d), "name": name},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "status.json").write_text(json.dumps({"state": state, **({"error": error} if error else {})}))
    if metrics is not None:
        split = "test" if task == "classification" else "validation"
        (d / "eval" / "metrics.json").write_text(json.dumps({split: metrics}))
        (d / "efficiency.json").write_text(
            json.dumps(
                {
                    "train_seconds": train_seconds,
                    "peak_rss_mb": 1000.0 + seed,
                    "trainable_params": 10,
                    "trainable_percent": 1.0,
                    "inference_latency_ms_p50": 2.0,
                    **(extra_eff or {}),
                }
            )
        )
        (d / "model").mkdir()
        (d / "model" / "weights.bin").write_bytes(b"\0" * 2**20)
        rows = [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}, {"step": 2, "eval_loss": 0.65}, "not json"]
        (d / "metrics.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return d


def test_seeds_are_aggregated_and_the_cheaper_of_equals_wins(tmp_path):
    from tuneforge.compare import build_report

    fake_run(tmp_path, "full-seed1", "full", 1, {"accuracy": 0.80, "f1_macro": 0.7}, train_seconds=100)
    fake_run(tmp_path, "full-seed2", "full", 2, {"accuracy": 0.90, "f1_macro": 0.8}, train_seconds=120)
    fake_run(tmp_path, "lora-seed1", "lora", 1, {"accuracy": 0.85}, train_seconds=20)
    fake_run(tmp_path, "lora-seed2", "lora", 2, {"accuracy": 0.85}, train_seconds=20)
    fake_run(tmp_path, "prompt-seed1", "prompt", 1, {"accuracy": 0.85}, train_seconds=10)
    rep = build_report([tmp_path], tmp_path / "rep")
    groups = {g["label"]: g for g in rep.data["groups"]}
    acc = groups["full"]["metrics"]["accuracy"]
    assert acc["n"] == 2 and acc["mean"] == pytest.approx(0.85) and acc["std"] == pytest.approx(math.sqrt(0.005))
    assert groups["full"]["efficiency"]["train_seconds"]["mean"] == pytest.approx(110)
    assert groups["full"]["efficiency"]["model_size_mb"]["mean"] == pytest.approx(1.0)  # computed from model/
    # all three have mean accuracy 0.85: the cheapest is best, and the best value (0.85 / (10 s / 60))
    assert rep.data["best"] == "prompt" and rep.data["best_value"] == "prompt"
    assert rep.data["value_scores"]["lora"] == pytest.approx(0.85 / (20 / 60))
    md = rep.md_path.read_text()
    assert "| full | completed | 2 | 0.8500 ± 0.0707 |" in md
    assert json.loads(rep.json_path.read_text())["runs"][0]["curves"]["eval"] == [[2, 0.65]]


def test_lower_is_better_metric_and_broken_or_running_runs(tmp_path):
    from tuneforge.compare import build_report

    kw = dict(task="causal_lm", metric="loss")
    fake_run(tmp_path, "full-seed1", "full", 1, {"loss": 1.2, "perplexity": 3.3}, train_seconds=600, **kw)
    fake_run(tmp_path, "lora-seed1", "lora", 1, {"loss": 1.5, "perplexity": 4.5}, train_seconds=60, **kw)
    fake_run(tmp_path, "qlora-seed1", "qlora", 1, None, state="failed", error="MethodError: no 4-bit on this CPU", **kw)
    fake_run(tmp_path, "adapter-seed1", "adapter", 1, None, state="running", **kw)
    rep = build_report(
        [tmp_path / n for n in ("full-seed1", "lora-seed1", "qlora-seed1", "adapter-seed1")], tmp_path / "rep"
    )
    assert rep.data["metric"] == "loss" and rep.data["greater_is_better"] is False
    assert rep.data["best"] == "full"  # lowest loss
    assert rep.data["best_value"] == "lora"  # 1.5 x 1 min beats 1.2 x 10 min
    groups = {g["label"]: g for g in rep.data["groups"]}
    assert groups["qlora"]["state"] == "failed" and "no 4-bit on this CPU" in groups["qlora"]["errors"][0]
    assert groups["adapter"]["state"] == "running"
    html = rep.html_path.read_text()
    assert "no 4-bit on this CPU" in html and html.count('src="data:image/png;base64,') == 3


def test_same_method_with_different_settings_stays_apart(tmp_path):
    from tuneforge.compare import build_report

    fake_run(tmp_path, "lora-a", "lora", 1, {"accuracy": 0.8}, lr=1e-3)
    fake_run(tmp_path, "lora-b", "lora", 1, {"accuracy": 0.7}, lr=1e-4)
    rep = build_report([tmp_path], tmp_path / "rep")
    labels = [g["label"] for g in rep.data["groups"]]  # named by the key that tells them apart
    assert labels == ["lora train.learning_rate=0.001", "lora train.learning_rate=0.0001"]


def test_a_config_saved_before_a_defaulted_key_existed_groups_with_the_others(tmp_path):
    from tuneforge.compare import build_report

    fake_run(tmp_path, "full-seed1", "full", 1, {"accuracy": 0.8}, lr=1e-3)
    newer = fake_run(tmp_path, "full-seed2", "full", 2, {"accuracy": 0.7}, lr=1e-3)
    cfg = yaml.safe_load((newer / "config.yaml").read_text())
    cfg["data"] = {"clean": {"noise_features": "tfidf"}}  # the default, written out as a newer version does
    (newer / "config.yaml").write_text(yaml.safe_dump(cfg))
    rep = build_report([tmp_path], tmp_path / "rep")
    assert [(g["label"], len(g["runs"])) for g in rep.data["groups"]] == [("full", 2)]


def test_report_errors_are_clear(tmp_path):
    from tuneforge.compare import build_report
    from tuneforge.errors import RunDirError

    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="neither a run directory"):
        build_report([tmp_path / "empty"])
    a = fake_run(tmp_path / "x", "r1", "full", 1, {"accuracy": 0.5})
    b = fake_run(tmp_path / "y", "r2", "lora", 1, {"accuracy": 0.5})
    with pytest.raises(RunDirError, match="--out"):
        build_report([a, b])
