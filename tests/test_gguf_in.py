"""A GGUF file as the base model (models/gguf_in.py): the builtin SmolLM2 Q4_1 GGUF given by path converts once into
the cache, keyed by its content, to the same weights and chat template as the builtin alias; bad files are one
line each and leave nothing in the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.errors import ModelError
from tuneforge.models import gguf_in


def _writer(path: Path, arch: str):
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.unit
def test_bad_gguf_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    from tuneforge.models.loader import resolve_model

    fake = tmp_path / "fake.gguf"
    fake.write_text("not really a model")
    cases = [(fake, "not a GGUF file (it starts with b'not ', a GGUF file with b'GGUF')")]
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 20)
    cases.append((truncated, "not a readable GGUF file (truncated or damaged?)"))
    cases.append((_writer(tmp_path / "bert.gguf", "bert"), "GGUF architecture 'bert' cannot be loaded"))
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.gguf").write_bytes(b"GGUF")
    (two / "b.gguf").write_bytes(b"GGUF")
    cases.append((two, "holds 2 .gguf files (a.gguf, b.gguf): name the one to use in model.name"))
    for path, message in cases:
        with pytest.raises(ModelError) as err:
            resolve_model(str(path))
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(ModelError, match=r"it reads .*llama.*qwen3"):  # the supported architectures are listed
        resolve_model(str(tmp_path / "bert.gguf"))
    assert not any((tmp_path / "cache").glob("models/*"))  # nothing half-written


@pytest.mark.unit
def test_what_counts_as_a_gguf_model(tmp_path):
    (tmp_path / "m.GGUF").write_bytes(b"GGUF")
    (tmp_path / "m.bin").write_bytes(b"x")
    assert gguf_in.is_gguf(tmp_path / "m.GGUF") and not gguf_in.is_gguf(tmp_path / "m.bin")
    assert gguf_in.is_gguf(tmp_path)  # a directory holding a .gguf and no config.json
    (tmp_path / "config.json").write_text("{}")
    assert not gguf_in.is_gguf(tmp_path)  # a transformers directory that also holds a GGUF copy


@pytest.mark.integration
def test_a_gguf_path_converts_once_to_the_builtins_weights(tmp_path, monkeypatch, capfd):
    """The builtin's own GGUF file given by path: dequantized (said in one line), the same tensors and chat template
    as builtin:smollm2-135m-instruct (converted from the same file), converted once; a copy of the file under another
    name reuses the conversion (keyed by content); a directory holding the file works too."""
    import shutil

    from safetensors.torch import load_file

    from tuneforge.models.builtins import BUILTIN_MODELS
    from tuneforge.models.loader import load_tokenizer, resolve_model

    src = BUILTIN_MODELS["smollm2-135m-instruct"].source()
    if src is None:
        pytest.skip("the builtin SmolLM2 GGUF is not installed (make install)")
    builtin = Path(resolve_model("builtin:smollm2-135m-instruct"))  # in the default cache, as every run has it
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(src, d / "my-model.gguf")
    out = Path(resolve_model(str(d / "my-model.gguf")))
    err = capfd.readouterr().err
    assert "my-model.gguf is quantized (Q4_1): its weights are dequantized to float32" in err
    assert out.parent == tmp_path / "cache" / "models" and out.name.startswith("gguf-")
    ours, theirs = load_file(out / "model.safetensors"), load_file(builtin / "model.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    tok = load_tokenizer(str(out))
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    again = Path(resolve_model(str(d)))  # the directory holding the one file
    assert again == out and "converting" not in capfd.readouterr().err
    (d / "my-model.gguf").rename(d / "renamed.gguf")
    assert Path(resolve_model(str(d / "renamed.gguf"))) == out  # keyed by content, not by name
    assert "converting" not in capfd.readouterr().err
