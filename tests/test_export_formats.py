"""`tuneforge export` on tiny runs: each format loads back (through predict / chat / the library), matches the
trained model within its tolerance on the re-created test split, and writes a complete export.json."""

import json

import pytest

from sft_common import train_tiny_sft_run

from conftest import run_cli


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    return train_tiny_sft_run(tmp_path_factory.mktemp("export-sft"), rows=30, epochs=1, max_new_tokens=8)


REPORT_KEYS = {"format", "size_bytes", "parity", "speed", "source_run"}


def check_report(out, fmt, bench=True):
    rep = json.loads((out / "export.json").read_text())
    assert (REPORT_KEYS - ({"speed"} if not bench else set())) <= set(rep)
    assert rep["format"] == fmt and rep["size_bytes"] > 0
    if not bench:
        return rep
    sp = rep["speed"]
    for side in ("reference", "export"):
        s = sp[side]
        assert 0 < s["latency_ms_p50_batch1"] <= s["latency_ms_p95_batch1"]
        assert s["throughput_rows_per_s_batch32"] > 0
    return rep


@pytest.mark.integration
def test_merged_export_is_plain_transformers_and_reproduces_logits(tiny_cls_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.export.exporter import export_run
    from tuneforge.inference import classify_logits, load_run

    out = tmp_path / "merged"
    rep = export_run(tiny_cls_run, "merged", out)
    check_report(out, "merged")
    p = rep["parity"]
    assert p["split"] == "test" and p["rows"] > 0 and p["max_abs_logit_diff"] < 1e-4 and p["label_agreement"] == 1.0
    # transformers alone, with the label map
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert set(model.config.id2label.values()) == {"negative", "positive"}
    AutoTokenizer.from_pretrained(out)
    texts = ["good great film", "dull boring plot"]
    ref = classify_logits(load_run(tiny_cls_run), texts)
    exp = classify_logits(load_run(out), texts)
    assert abs(ref - exp).max() < 1e-4
    # predict takes the export directory
    proc = run_cli("predict", str(out), "good great film")
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert json.loads(proc.stdout.splitlines()[0])["label"] in ("negative", "positive")


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["int8", "onnx", "onnx-int8"])
def test_classifier_exports_keep_parity(tiny_cls_run, tmp_path, fmt):
    if fmt.startswith("onnx"):
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    out = tmp_path / fmt
    bench = fmt == "int8"  # the speed report is format-independent code: measured once keeps the test short
    proc = run_cli("export", tiny_cls_run, "--format", fmt, "--out", str(out), *([] if bench else ["--no-bench"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "label agreement" in proc.stdout and ("batch 32" in proc.stdout) == bench
    rep = check_report(out, fmt, bench)
    p = rep["parity"]
    if fmt == "onnx":  # same fp32 computation, another runtime
        assert p["max_abs_logit_diff"] < 1e-3 and p["label_agreement"] == 1.0
    else:  # int8: close, not equal
        assert p["label_agreement"] >= 0.9 and abs(p["accuracy_delta_points"]) <= 10
    pred = run_cli("predict", str(out), "good great film", "awful dull plot")
    assert pred.returncode == 0, pred.stderr[-1000:]
    assert len(pred.stdout.splitlines()) == 2


@pytest.mark.integration
def test_causal_lm_merged_int8_and_onnx(sft_run, tmp_path):
    from tuneforge.export.exporter import export_run
    from tuneforge.generation import generate, load_chat_model

    msgs = [[{"role": "user", "content": "who are you"}]]
    ref = generate(load_chat_model(sft_run), msgs, {"temperature": 0, "max_new_tokens": 8})[0]["response"]
    rep = export_run(sft_run, "merged", tmp_path / "m", bench=False)
    assert rep["parity"]["split"] == "validation" and rep["parity"]["max_abs_logit_diff"] < 1e-4
    assert rep["parity"]["next_token_agreement"] == 1.0
    # chat on the merged export answers like the run (same template, system prompt and stop tokens)
    assert (
        generate(load_chat_model(str(tmp_path / "m")), msgs, {"temperature": 0, "max_new_tokens": 8})[0]["response"]
        == ref
    )
    proc = run_cli(
        "chat", str(tmp_path / "m"), "--message", "who are you", "--temperature", "0", "--max-new-tokens", "8"
    )
    assert proc.returncode == 0 and proc.stdout.strip() == ref, proc.stderr[-1000:]
    rep = export_run(sft_run, "int8", tmp_path / "q", bench=False)
    # causal LMs get weight-only int8 (int8 on disk, fp32 compute): near-exact, and the file is smaller
    assert rep["int8_scheme"] == "weight-only" and rep["parity"]["next_token_agreement"] > 0.98
    assert rep["size_bytes"] < rep["reference_size_bytes"]
    assert (
        generate(load_chat_model(str(tmp_path / "q")), msgs, {"temperature": 0, "max_new_tokens": 8})[0]["response"]
        is not None
    )
    pytest.importorskip("onnxruntime")
    rep = export_run(sft_run, "onnx", tmp_path / "o", bench=False)
    assert rep["parity"]["max_abs_logit_diff"] < 1e-3 and rep["parity"]["next_token_agreement"] > 0.99


@pytest.mark.integration
def test_export_errors_are_one_line(tiny_cls_run, sft_run, tmp_path):
    cases = [
        (("export", tiny_cls_run, "--format", "tfl", "--out", str(tmp_path / "x")), "unknown export format 'tfl'"),
        (("export", tiny_cls_run, "--format", "gguf", "--out", str(tmp_path / "x")), "gguf is for chat models"),
        (("export", str(tmp_path / "nope"), "--format", "merged", "--out", str(tmp_path / "y")), "not found"),
        (("export", sft_run, "--format", "onnx-int8", "--out", str(tmp_path / "z")), "onnx-int8 is for classifiers"),
    ]
    for args, needle in cases:
        proc = run_cli(*args)
        assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.txt").write_text("x")
    proc = run_cli("export", tiny_cls_run, "--format", "merged", "--out", str(tmp_path / "full"), "--no-bench")
    assert proc.returncode != 0 and "--overwrite" in proc.stderr


@pytest.mark.unit
def test_int8_weight_only_round_trip_is_within_half_a_step():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneforge.inference.exports import int8_weight_only_state, load_int8_weight_only

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    state = int8_weight_only_state(model)
    name = "model.layers.0.mlp.down_proj"
    assert state[f"{name}.weight_int8"].dtype == torch.int8 and f"{name}.weight" not in state
    assert "lm_head.weight" in state  # the (tied) head stays fp32
    back = load_int8_weight_only(LlamaForCausalLM(cfg).eval(), state)
    w, wq = model.get_submodule(name).weight, back.get_submodule(name).weight
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert ((w - wq).abs() <= step / 2 + 1e-7).all()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert (model(ids).logits.argmax(-1) == back(ids).logits.argmax(-1)).float().mean() > 0.95
    del state[f"{name}.weight_scale"]
    with pytest.raises(RuntimeError, match="down_proj"):
        load_int8_weight_only(LlamaForCausalLM(cfg).eval(), state)


class _Plant:
    """A pickle payload: unpickling it creates the directory `path` (stands in for any code an attacker runs)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.makedirs, (self.path,)


@pytest.mark.integration
def test_int8_export_is_safetensors_and_a_planted_pickle_never_runs(tiny_cls_run, tmp_path):
    import pickle
    import shutil

    import torch

    from tuneforge.errors import ModelError
    from tuneforge.export.exporter import export_run
    from tuneforge.inference import classify_logits, load_run
    from tuneforge.inference.exports import INT8_WEIGHTS, LEGACY_INT8_WEIGHTS, read_int8_state

    out = tmp_path / "int8"
    export_run(tiny_cls_run, "int8", out, bench=False)
    assert INT8_WEIGHTS == "model_int8.safetensors" and (out / INT8_WEIGHTS).is_file()
    assert not (out / LEGACY_INT8_WEIGHTS).exists()
    from safetensors import safe_open

    with safe_open(str(out / INT8_WEIGHTS), framework="pt") as f:  # int8 weights with their scales beside them
        keys = set(f.keys())
        assert any(k.endswith(".weight_int8") for k in keys) and any(k.endswith(".weight_scale") for k in keys)
        assert all(f.get_tensor(k).dtype == torch.int8 for k in keys if k.endswith(".weight_int8"))
    texts = ["good great film", "dull boring plot"]
    ref = classify_logits(load_run(out), texts)

    # an export written by an older tuneforge (torch.save of the same state) still loads, without pickle code
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / INT8_WEIGHTS).unlink()
    torch.save(read_int8_state(out), old / LEGACY_INT8_WEIGHTS)
    assert abs(classify_logits(load_run(old), texts) - ref).max() == 0

    # the payload is live: plain unpickling runs it
    probe = tmp_path / "probe-marker"
    pickle.loads(pickle.dumps(_Plant(probe)))
    assert probe.exists()
    # planted where the loader looks, as torch.save's zip and as a bare pickle: refused, never run
    for i, plant in enumerate((lambda obj, p: torch.save(obj, p), lambda obj, p: p.write_bytes(pickle.dumps(obj)))):
        evil, marker = tmp_path / f"evil{i}", tmp_path / f"marker{i}"
        shutil.copytree(out, evil)
        (evil / INT8_WEIGHTS).unlink()
        plant({"bert.embeddings.word_embeddings.weight": _Plant(marker)}, evil / LEGACY_INT8_WEIGHTS)
        with pytest.raises(ModelError, match="re-export"):
            load_run(evil)
        assert not marker.exists()
    proc = run_cli("predict", str(tmp_path / "evil0"), "good film")
    assert proc.returncode == 4 and not (tmp_path / "marker0").exists(), proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("tuneforge: ")]  # library logs
    assert len(lines) == 1 and lines[0].startswith("error: ") and "re-export" in lines[0], lines
    assert "os.makedirs" in lines[0] and "weights_only=False" not in lines[0]
