"""Run directories written by the code before the issue-17 refactor stay usable: `predict`, `chat`, `serve` and
`export` load them through the public API.

tests/fixtures/pre17/ holds two runs the pre-17 code wrote (see its README.md and make_fixture.py): a LoRA
classifier on the tiny BERT and a LoRA SFT run on the tiny Llama, without weights. Each test rebuilds the tiny
base model with the same builder and seed the fixture was trained on, writes deterministic LoRA (and head)
weights in PEFT's format next to the fixture's adapter_config.json, fills in the path placeholders, and then
uses the run as the old code left it: no split file, no metadata other than what the old layout had."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

pytest.importorskip("peft")

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pre17"
SHAPE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "tie_word_embeddings",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def test_fixture_has_no_weights_and_no_absolute_paths():
    files = [f for f in FIXTURE.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    assert not [f for f in files if f.suffix in WEIGHT_SUFFIXES or "checkpoints" in f.parts]
    for kind in ("classification", "causal_lm"):
        for rel in (
            "run/config.yaml",
            "run/status.json",
            "run/model/tuneforge.json",
            "run/model/adapter_config.json",
            "run/model/tokenizer.json",
            "base_config.json",
        ):
            assert (FIXTURE / kind / rel).is_file(), f"{kind}/{rel}"
        for f in (FIXTURE / kind).rglob("*"):
            if f.is_file():
                text = f.read_text(encoding="utf-8")
                assert "/tmp/" not in text and "/work/" not in text and "/home/" not in text, f


def materialize(kind: str, root: Path, base_dir: str) -> Path:
    """Copy the fixture `kind` under root, fill in its placeholders; the run directory."""
    shutil.copytree(FIXTURE / kind, root)
    run = root / "run"
    data = next(p for p in root.iterdir() if p.name.startswith("data."))
    subs = {"@BASE_MODEL@": base_dir, "@DATA@": str(data), "@RUN_DIR@": str(run)}
    for f in run.rglob("*"):
        if f.is_file():
            text = f.read_text(encoding="utf-8")
            for old, new in subs.items():
                text = text.replace(old, new)
            f.write_text(text, encoding="utf-8")
    # the rebuilt base must have the shapes the old run was trained on
    want = json.loads((root / "base_config.json").read_text())
    got = json.loads((Path(base_dir) / "config.json").read_text())
    assert {k: got.get(k) for k in SHAPE_KEYS} == {k: want.get(k) for k in SHAPE_KEYS}
    return run


def write_adapter(model_dir: Path, base_dir: str, auto_class, scratch: Path, **model_kwargs):
    """Deterministic LoRA weights (lora_B non-zero, so the adapter changes the outputs) and, for a classifier,
    the head PEFT keeps in modules_to_save, saved in PEFT's format as the old run saved them. Returns the
    in-memory model, the reference the loaded run must agree with."""
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig.from_pretrained(str(model_dir))
    cfg.inference_mode = False
    torch.manual_seed(17)
    model = get_peft_model(auto_class.from_pretrained(base_dir, **model_kwargs), cfg)
    gen = torch.Generator().manual_seed(17)
    changed = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
                changed += 1
    assert changed
    model.save_pretrained(str(scratch))
    shutil.copy(scratch / "adapter_model.safetensors", model_dir / "adapter_model.safetensors")
    return model.eval()


@pytest.fixture(scope="module")
def cls_run(tiny_bert, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("pre17-cls")
    run = materialize("classification", root / "fx", tiny_bert)
    meta = json.loads((run / "model" / "tuneforge.json").read_text())
    names = meta["labels"]
    ref = write_adapter(
        run / "model",
        tiny_bert,
        AutoModelForSequenceClassification,
        root / "scratch",
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    return run, names, ref


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from sft_common import make_tiny_llama

    root = tmp_path_factory.mktemp("pre17-lm")
    base = make_tiny_llama(root / "base")  # seed 0, as make_fixture.py
    run = materialize("causal_lm", root / "fx", base)
    ref = write_adapter(run / "model", base, AutoModelForCausalLM, root / "scratch")
    return run, ref


def test_old_classification_run_predicts(cls_run):
    import torch
    from transformers import AutoTokenizer

    import tuneforge

    run, names, ref = cls_run
    texts = ["good great film", "bad boring plot", "the acting was superb and moving"]
    out = tuneforge.predict(run, texts)
    assert [r["text"] for r in out] == texts
    assert all(r["label"] in names and set(r["probabilities"]) == set(names) for r in out)
    # the adapter and the head were loaded, not left at their initial values
    tok = AutoTokenizer.from_pretrained(str(run / "model"))
    with torch.no_grad():
        probs = ref(**tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")).logits.softmax(-1)
    for r, p in zip(out, probs):
        for i, n in enumerate(names):
            assert r["probabilities"][n] == pytest.approx(float(p[i]), abs=1e-4)


def test_old_classification_run_serves(cls_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import load_backend

    run, names, _ = cls_run
    with TestClient(create_app(load_backend(str(run), device="cpu"))) as client:
        r = client.post("/v1/classify", json={"texts": ["good great film", "bad boring plot"]})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == 2 and all(x["label"] in names for x in results)


@pytest.mark.parametrize("fmt", ["merged", "int8"])
def test_old_classification_run_exports(cls_run, tmp_path, fmt):
    from tuneforge.export.exporter import export_run

    run, _, _ = cls_run
    # the old run saved no split file: export re-creates the test split from config.yaml and data.csv
    report = export_run(str(run), fmt, tmp_path / fmt, bench=False, max_samples=8)
    parity = report["parity"]
    assert parity["split"] == "test" and parity["rows"] > 0
    assert "label_agreement" in parity and 0.0 <= parity["label_agreement"] <= 1.0
    if fmt == "merged":
        assert parity["max_abs_logit_diff"] < 1e-3
    assert (tmp_path / fmt / "export.json").is_file()


def test_old_causal_lm_run_chats(lm_run):
    import torch
    from transformers import AutoTokenizer

    import tuneforge

    run, ref = lm_run
    answer = tuneforge.chat(run, "hello", temperature=0, max_new_tokens=4)
    assert isinstance(answer, str)
    # the saved template, system prompt and stop token of the old run are the ones used
    meta = json.loads((run / "model" / "tuneforge.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(run / "model"))
    msgs = [{"role": "system", "content": meta["system_prompt"]}, {"role": "user", "content": "hello"}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        gen = ref.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=4,
            do_sample=False,
            eos_token_id=meta["stop_token_ids"],
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :]
    gen = gen.tolist()
    gen = gen[: next((i for i, t in enumerate(gen) if t in meta["stop_token_ids"]), len(gen))]
    assert answer == tok.decode(gen, skip_special_tokens=True).strip()


def test_old_causal_lm_run_serves(lm_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import load_backend

    run, _ = lm_run
    with TestClient(create_app(load_backend(str(run), device="cpu"))) as client:
        r = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, "temperature": 0},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body["choices"][0]["message"]["content"], str)
        assert body["usage"]["completion_tokens"] <= 3


def test_old_causal_lm_run_exports(lm_run, tmp_path):
    from tuneforge.export.exporter import export_run

    run, _ = lm_run
    # no test split in this run: export checks on the validation split re-created from config.yaml
    report = export_run(str(run), "merged", tmp_path / "merged", bench=False, max_samples=4)
    parity = report["parity"]
    assert parity["split"] == "validation" and parity["rows"] > 0
    assert parity["next_token_agreement"] >= 0.0 and parity["max_abs_logit_diff"] < 1e-3
    assert (tmp_path / "merged" / "export.json").is_file()
