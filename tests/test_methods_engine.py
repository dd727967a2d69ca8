"""Every method through the one training path (tuneforge.train on a tiny BERT): the run completes, reports
its trainable parameters, loads back in a fresh process with identical logits, PEFT adapters load with stock
PEFT, and `tuneforge merge` writes a plain checkpoint (or refuses in one line)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_sentiment_rows, run_cli, tiny_config

pytestmark = pytest.mark.integration

METHODS = {
    "full": {},
    "freeze": {"trainable_layers": 1, "layerwise_lr_decay": 0.9},
    "lora": {"r": 4, "target_modules": ["query", "value"], "use_dora": True},
    "qlora": {"r": 4},
    "adapter": {"placement": "houlsby", "bottleneck_size": 8},
    "prefix": {"num_virtual_tokens": 4, "projection": True},
    "prompt": {"num_virtual_tokens": 4},
    "ia3": {},
}
# saved in PEFT's format on this BERT classifier (prefix tuning of encoders is tuneforge's own, see test_methods_prefix)
PEFT_METHODS = ["lora", "qlora", "prompt", "ia3"]
TEXTS = ["a great and wonderful film", "boring and awful acting", "the plot was quite dull"]


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory) -> dict:
    import tuneforge
    from tuneforge.config.validation import validate_config

    root = tmp_path_factory.mktemp("method-runs")
    data = root / "sentiment.csv"
    pd.DataFrame(make_sentiment_rows(80)).to_csv(data, index=False)
    out = {}
    for name, extra in METHODS.items():
        raw = tiny_config(tiny_bert, str(data), str(root / name), method=name)
        raw["method"].update(extra)
        if name == "prefix":
            raw["eval"] = {"load_best_model": False}  # required with projection (see PrefixMethod.check_config)
        raw["train"].update({"epochs": 1, "learning_rate": 5e-3 if name in ("full", "freeze") else 1e-2})
        out[name] = tuneforge.train(validate_config(raw))
    return out


def test_every_method_trains_and_reports(runs):
    for name, res in runs.items():
        status = json.loads((res.run_dir / "status.json").read_text())
        assert status["state"] == "completed", (name, status)
        eff = json.loads((res.run_dir / "efficiency.json").read_text())
        assert 0 < eff["trainable_params"] <= eff["total_params"]
        assert (eff["trainable_percent"] == 100.0) == (name == "full"), (name, eff["trainable_percent"])
        saved = json.loads((res.run_dir / "model" / "tuneforge.json").read_text())
        assert saved["method"] == name and saved["method_config"]["name"] == name
        rows = [json.loads(l) for l in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
        assert any("loss" in r for r in rows), name
    assert (runs["adapter"].run_dir / "model" / "adapter_weights.safetensors").is_file()
    assert (runs["lora"].run_dir / "model" / "adapter_config.json").is_file()


def _logits_in_this_process(runs) -> dict:
    from tuneforge.inference import classify_logits, load_run

    return {name: classify_logits(load_run(res.run_dir), TEXTS) for name, res in runs.items()}


def test_fresh_process_load_gives_identical_logits(runs, tmp_path):
    here = _logits_in_this_process(runs)
    script = (
        "import json, sys, numpy as np\n"
        "from tuneforge.inference import classify_logits, load_run\n"
        "runs, texts, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]\n"
        "np.savez(out, **{n: classify_logits(load_run(d), texts) for n, d in runs.items()})\n"
        "from tuneforge.cli.app import main\n"
        "sys.exit(main(['predict', runs['adapter'], *texts]))\n"
    )
    out = tmp_path / "logits.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            json.dumps({n: str(r.run_dir) for n, r in runs.items()}),
            json.dumps(TEXTS),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert [r["text"] for r in rows] == TEXTS and all(r["label"] in ("negative", "positive") for r in rows)
    there = np.load(out)
    for name in runs:
        np.testing.assert_allclose(here[name], there[name], atol=1e-6, err_msg=name)


def test_peft_adapters_load_with_stock_peft(runs, tiny_bert):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tuneforge.inference import classify_logits, load_run

    for name in PEFT_METHODS:
        run = load_run(runs[name].run_dir)
        kw = {}
        if name == "qlora":  # an adapter trained on a 4-bit base is used on the same 4-bit base
            from transformers import BitsAndBytesConfig

            kw["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
                llm_int8_skip_modules=["classifier"],
            )
        base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, **kw)
        stock = PeftModel.from_pretrained(base, str(runs[name].run_dir / "model")).eval()
        if name == "qlora":  # bitsandbytes 0.50's CPU repacking breaks on this tiny model's 32-wide layers
            from tuneforge.methods.lora import keep_cpu_4bit_layout

            keep_cpu_4bit_layout(stock)
        run.model = stock
        ours = classify_logits(load_run(runs[name].run_dir), TEXTS)
        np.testing.assert_allclose(classify_logits(run, TEXTS), ours, atol=1e-6, err_msg=name)


def test_merge_in_process_for_every_mergeable_method(runs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.export.merge import merge_run
    from tuneforge.inference import classify_logits, load_run

    for name in ["full", "freeze", "qlora", "ia3"]:
        r = merge_run(runs[name].run_dir, tmp_path / name, texts=TEXTS)
        assert r["max_abs_logit_diff"] <= 1e-4, (name, r)
        # plain transformers alone, no tuneforge / PEFT: same predictions as the trained run
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / name).eval()
        tok = AutoTokenizer.from_pretrained(tmp_path / name)
        assert model.config.id2label == {0: "negative", 1: "positive"}
        assert not hasattr(model.config, "quantization_config")
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            plain = model(**enc).logits.numpy()
        np.testing.assert_allclose(plain, classify_logits(load_run(runs[name].run_dir), TEXTS), atol=1e-4, err_msg=name)


def test_merge_cli(runs, tmp_path):
    out = tmp_path / "merged-lora"
    proc = run_cli("merge", str(runs["lora"].run_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max |logit difference|" in proc.stdout
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()
    info = json.loads((out / "tuneforge_merge.json").read_text())
    assert info["method"] == "lora" and info["max_abs_logit_diff"] <= 1e-4
    # methods that cannot merge say so in one line, with a non-zero exit
    proc = run_cli("merge", str(runs["adapter"].run_dir), "--out", str(tmp_path / "adapter"))
    assert proc.returncode != 0 and "cannot be merged" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "adapter").exists()


def test_merge_refusals_in_process(runs, tmp_path):
    from tuneforge.errors import MethodError, ModelError
    from tuneforge.export.merge import merge_run

    for name in ("prompt", "prefix", "adapter"):
        with pytest.raises(MethodError, match="cannot be merged"):
            merge_run(runs[name].run_dir, tmp_path / name)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(ModelError, match="--overwrite"):
        merge_run(runs["ia3"].run_dir, tmp_path / "taken")
