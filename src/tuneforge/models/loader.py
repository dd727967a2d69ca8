"""Resolving model names (builtin alias, local directory, hub id) and loading tokenizers and models."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from tuneforge.errors import ModelError, first_line
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
            raise ModelError(
                f"unknown builtin model '{name}'{closest(name, ['builtin:' + a for a in BUILTIN_MODELS])}; "
                f"available: {', '.join('builtin:' + a for a in BUILTIN_MODELS)}"
            )
        missing = spec.missing_packages()
        if missing:
            what = "the package" if len(missing) == 1 else "the packages"
            raise ModelError(
                f"builtin model '{name}' needs {what} {', '.join(repr(m) for m in missing)}: {spec.install_hint()}"
            )
        src = spec.source()
        return str(convert_once(spec, src) if spec.convert else src)
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and (path / "model" / METADATA_FILE).is_file():
        return _run_model_dir(name, path / "model")
    if path.exists():
        from tuneforge.models import foreign, gguf_in

        if gguf_in.is_gguf(path):
            return gguf_in.resolve_gguf(path)
        if foreign.is_checkpoint_file(path):
            return str(foreign.resolve_checkpoint_file(path))
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"model path '{name}' is not a transformers model directory (no config.json), a GGUF file or a "
                f"checkpoint file ({', '.join(foreign.CHECKPOINT_SUFFIXES)})"
            )
        timm = foreign.timm_config(path)
        return str(foreign.resolve_timm_dir(path, timm) if timm is not None else path)
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ModelError(f"model directory not found: {name}")
    return _hub_snapshot(name, revision)


def _run_model_dir(name: str, model_dir: Path) -> str:
    """A finished run given as a model (`model.name: runs/sft` to continue from it): its whole model, or for a run
    that saved only an adapter, a ModelError saying to merge it first."""
    if (model_dir / "config.json").is_file():
        return str(model_dir)
    try:
        method = json.loads((model_dir / METADATA_FILE).read_text()).get("method", "adapter")
    except (OSError, ValueError):
        method = "adapter"
    merged = f"{name.rstrip('/')}-merged"
    raise ModelError(
        f"{name} is a {method} run: its model/ holds the adapter only. Merge it first (tuneforge merge {name} "
        f"--out {merged}) and set model.name: {merged}; the merged model is what the new run starts from (and, "
        f"for preference tuning, its reference), with a fresh adapter on top"
    )


def _hub_snapshot(repo_id: str, revision: str | None) -> str:
    try:
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(repo_id, revision=revision, local_files_only=True)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
                raise
            return snapshot_download(
                repo_id,
                revision=revision,
                etag_timeout=10,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
            )
    except Exception as exc:
        reason = first_line(exc, 160)
        raise ModelError(
            f"model '{repo_id}' is not a builtin alias or local directory, and it could not be "
            f"downloaded from the hub (offline or unknown id: {reason}). Use a local directory or "
            f"one of: {', '.join('builtin:' + a for a in BUILTIN_MODELS)}"
        ) from None


#: BuiltinModel.convert -> ("module:function" writing a transformers directory from (source file, directory), the
#: rough time it takes, for the one line printed while it runs)
CONVERTERS: dict[str, tuple[str, str]] = {
    "gguf": ("tuneforge.models.gguf_in:write_gguf", "~20 s"),
    "mobilenet_v2": ("tuneforge.models.vision:write_mobilenet_v2", "~2 s"),
    "efficientnet_lite0": ("tuneforge.models.vision:write_efficientnet_lite0", "~2 s"),
}


def convert_once(spec, source: Path) -> Path:
    """Convert a builtin's shipped file once into a transformers directory in the cache."""
    import importlib

    target, seconds = CONVERTERS[spec.convert]
    module, func = target.split(":")
    return convert_into_cache(spec.alias, source, getattr(importlib.import_module(module), func), seconds)


def cached_conversion(name: str) -> Path | None:
    """cache_dir()/models/<name> when a finished conversion is there."""
    out = cache_dir() / "models" / name
    return out if (out / "config.json").is_file() and any(out.glob("*.safetensors")) else None


def convert_into_cache(name: str, source: Path, write, seconds: str) -> Path:
    """cache_dir()/models/<name>, written by `write(source, directory)` unless a finished one is there: into a
    temporary directory, then renamed, so an interrupted conversion never leaves a half-written model; later loads
    take <1 s."""
    import shutil
    import tempfile

    out = cache_dir() / "models" / name
    if cached_conversion(name) is not None:
        return out
    print(f"tuneforge: converting {source.name} to a transformers model in {out} (once, {seconds})", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(source, tmp)
        if out.exists():  # a stale, incomplete directory (or another process just finished the same conversion)
            if cached_conversion(name) is not None:
                return out
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"could not load a tokenizer from '{path}': {first_line(exc)}") from None
    return tok


def pick_dtype(dtype: str) -> torch.dtype:
    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model(
    path: str,
    auto_class,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    random_init: bool = False,
    **kwargs: Any,
):
    """`auto_class.from_pretrained(path, ...)`; with `random_init` the same architecture and head, randomly
    initialised (config keyword arguments such as num_labels apply; loading options are dropped)."""
    try:
        if random_init:
            from transformers import AutoConfig

            loading = ("ignore_mismatched_sizes", "quantization_config", "device_map", "attn_implementation")
            config = AutoConfig.from_pretrained(
                path, trust_remote_code=trust_remote_code, **{k: v for k, v in kwargs.items() if k not in loading}
            )
            return auto_class.from_config(config, dtype=pick_dtype(dtype), trust_remote_code=trust_remote_code)
        return auto_class.from_pretrained(path, dtype=pick_dtype(dtype), trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not load model from '{path}': {first_line(exc)}") from None


def write_run_metadata(model_dir: str | Path, meta: dict) -> None:
    Path(model_dir, METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))


def read_run_metadata(model_dir: str | Path) -> dict:
    p = Path(model_dir, METADATA_FILE)
    if not p.is_file():
        raise ModelError(f"{model_dir} has no {METADATA_FILE}: not a model written by tuneforge")
    return json.loads(p.read_text())
