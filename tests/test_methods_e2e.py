"""Methods on the real builtin models (minutes on CPU): QLoRA on MiniLM merges into a plain checkpoint that
matches the 4-bit-trained model; layer discovery finds SmolLM2's 30 blocks and bottleneck adapters fit it."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_qlora_minilm_train_and_merge(tmp_path):
    import tuneforge
    from tuneforge.export.merge import merge_run
    from tuneforge.models.builtins import BUILTIN_MODELS

    if not BUILTIN_MODELS["minilm-l6"].installed():
        pytest.skip("builtin:minilm-l6 is not installed")
    res = tuneforge.train(
        "configs/methods/qlora-classification.yaml",
        [
            "data.max_train_samples=200",
            "train.max_steps=4",
            "train.eval_strategy='no'",
            f"output.dir={tmp_path / 'run'}",
            "train.report_to=none",
        ],
    )
    eff = json.loads((res.run_dir / "efficiency.json").read_text())
    assert eff["trainable_percent"] < 2.0
    r = merge_run(res.run_dir, tmp_path / "merged")
    assert r["max_abs_logit_diff"] <= 1e-3, r


def test_smollm2_layout_and_adapters():
    from transformers import AutoModelForCausalLM

    from tuneforge.methods import MethodContext
    from tuneforge.methods.adapter import AdapterConfig, AdapterMethod
    from tuneforge.methods.layers import describe
    from tuneforge.models.builtins import BUILTIN_MODELS
    from tuneforge.models.loader import load_model, resolve_model

    if not BUILTIN_MODELS["smollm2-135m-instruct"].installed():
        pytest.skip("builtin:smollm2-135m-instruct is not installed")
    model = load_model(resolve_model("builtin:smollm2-135m-instruct"), AutoModelForCausalLM, "float32")
    lay = describe(model)
    assert lay.num_blocks == 30 and lay.embeddings == ["model.embed_tokens"]
    m = AdapterMethod(AdapterConfig(placement="houlsby", bottleneck_size=16))
    m.apply(model, MethodContext())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == 30 * 2 * (2 * 576 * 16 + 16 + 576)
