"""Precision on a CPU: the line a training run prints about it, and for inference (tuneforge.inference.precision)
what `auto`, `fp32` and `bf16` resolve to, the bf16 wrapper (fp32 logits, PEFT and `generate` go through it) and
`--precision` on the CLI."""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answer")


@pytest.mark.unit
@pytest.mark.parametrize("units", [True, False])
def test_what_each_precision_resolves_to(units, monkeypatch):
    from tuneforge.config import environment
    from tuneforge.errors import ConfigError
    from tuneforge.inference.precision import ENV, resolve

    monkeypatch.setattr(environment, "cpu_bf16", lambda: units)
    monkeypatch.delenv(ENV, raising=False)
    assert resolve("auto", "cpu", True, 384) == ("bf16" if units else "fp32")
    assert resolve(None, "cpu", True, 384) == ("bf16" if units else "fp32")  # None: the environment, else auto
    assert resolve("auto", "cpu", False, 384) == "fp32"  # the task did not measure bf16 as safe
    assert resolve("auto", "cpu", True, 32) == "fp32"  # too narrow to pay off
    assert resolve("fp32", "cpu", True, 384) == "fp32"
    assert resolve("bf16", "cuda", True, 384) == "fp32"  # a GPU keeps the loaded dtype
    monkeypatch.setenv(ENV, "fp32")
    assert resolve(None, "cpu", True, 384) == "fp32"
    if units:
        assert resolve("bf16", "cpu", False, 32) == "bf16"
    else:
        with pytest.raises(ConfigError, match="bf16 units"):
            resolve("bf16", "cpu", True, 384)
    with pytest.raises(ConfigError, match="'fp16' is not one of auto, fp32, bf16"):
        resolve("fp16", "cpu", True, 384)


def _tiny_bert_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    return BertForSequenceClassification(cfg).eval()


@pytest.mark.unit
def test_the_bf16_wrapper_computes_in_bf16_and_returns_fp32_logits():
    from tuneforge.inference.precision import autocast_on_cpu, computes_in_bf16

    model = _tiny_bert_classifier()
    ids = torch.randint(0, 100, (4, 12))
    with torch.no_grad():
        exact = model(input_ids=ids).logits
        assert not computes_in_bf16(model)
        autocast_on_cpu(model)
        autocast_on_cpu(model)  # twice is once
        seen = []
        hook = model.bert.encoder.layer[0].output.dense.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        out = model(input_ids=ids).logits
        hook.remove()
    assert computes_in_bf16(model) and seen == [torch.bfloat16]
    assert out.dtype == torch.float32 and torch.allclose(out, exact, atol=0.05)
    assert not torch.equal(out, exact)  # it did compute in a lower precision


@pytest.mark.unit
def test_a_peft_model_generates_through_the_wrapper(tiny_wordpiece_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.inference.precision import autocast_on_cpu, computes_in_bf16

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_wordpiece_llama), LoraConfig(r=4)).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        exact = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        autocast_on_cpu(model)
        seen = []
        layer = model.get_base_model().model.layers[0].mlp.down_proj
        hook = layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        hook.remove()
    assert computes_in_bf16(model) and set(seen) == {torch.bfloat16} and len(seen) == 6  # one forward per token
    assert out.shape == exact.shape


@pytest.mark.unit
def test_load_run_applies_the_asked_precision(tiny_cls_run, monkeypatch):
    from tuneforge.config import environment
    from tuneforge.errors import ConfigError
    from tuneforge.inference import load_run, predict
    from tuneforge.inference.precision import computes_in_bf16

    monkeypatch.setattr(environment, "cpu_bf16", lambda: True)
    run = load_run(tiny_cls_run, precision="bf16")
    assert run.precision == "bf16" and computes_in_bf16(run.model)
    exact = load_run(tiny_cls_run, precision="fp32")
    assert exact.precision == "fp32" and not computes_in_bf16(exact.model)
    assert load_run(tiny_cls_run).precision == "fp32"  # auto: the tiny model is too narrow
    rows, ref = predict(run, ["a good film", "a dull film"]), predict(exact, ["a good film", "a dull film"])
    for a, b in zip(rows, ref, strict=True):
        probs, exact_probs = a["probabilities"], b["probabilities"]
        assert set(a) == set(b) and all(abs(probs[k] - exact_probs[k]) < 0.02 for k in probs), (a, b)
    monkeypatch.setattr(environment, "cpu_bf16", lambda: False)
    with pytest.raises(ConfigError, match="needs a CPU with bf16 units"):
        load_run(tiny_cls_run, precision="bf16")


@pytest.mark.unit
def test_cli_precision_flag(tiny_cls_run):
    proc = run_cli("predict", tiny_cls_run, "a good film", "--precision", "fp16")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: precision: 'fp16' is not one of auto, fp32, bf16"
    ), proc.stderr
    proc = run_cli("predict", tiny_cls_run, "a good film", "--precision", "fp32")
    assert proc.returncode == 0 and '"label"' in proc.stdout, proc.stderr


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_a_run_says_its_precision_and_why_in_its_first_lines(precision, tiny_bert, tmp_path):
    import pandas as pd
    import yaml

    from tuneforge.config.environment import cpu_bf16

    from conftest import make_sentiment_rows, tiny_config

    if precision == "bf16" and not cpu_bf16():
        pytest.skip("this CPU has no bf16 units")
    pd.DataFrame(make_sentiment_rows(48)).to_csv(tmp_path / "d.csv", index=False)
    raw = tiny_config(tiny_bert, str(tmp_path / "d.csv"), str(tmp_path / "run"), method="full")
    raw["train"].update(max_steps=2, eval_strategy="no", precision=precision)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("train", str(tmp_path / "c.yaml"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("tuneforge: precision "))
    if precision == "bf16":
        assert line == "tuneforge: precision bf16 autocast on CPU, fp32 weights and optimizer (asked for)"
    elif cpu_bf16():
        assert "auto: the model is 32 wide, under 256" in line, line
    else:
        assert line == "tuneforge: precision fp32 (auto: this CPU has no bf16 units)"
