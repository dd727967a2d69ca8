"""A GGUF file as the base model: `model.name: path/to/model.gguf` (or a directory holding one `.gguf` and no
config.json), for every architecture the pinned transformers reads from GGUF.

The file is checked first (its magic bytes, its metadata readable by gguf-py, an architecture transformers
supports: one line naming what is wrong otherwise), then converted once into the model cache, keyed by the file's
content (SHA-256; the digest is remembered per path, size and modification time, so a multi-GB file is hashed once):
transformers dequantizes the tensors (a quantized GGUF says so in one line, with its quantization) and builds the
tokenizer, with the chat template, from the GGUF metadata. The conversion is written into a temporary directory and
renamed when complete (models/loader.convert_into_cache), so a failed or interrupted one leaves nothing half-written
in the cache. A vocabulary that does not match the embedding rows is refused before anything is kept.

Unsloth's users hit broken GGUF round trips (unslothai/unsloth #2399, #3504); peers that read GGUF (LLaMA-Factory,
ms-swift) do it through the same transformers path without these checks.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from tuneforge.errors import ModelError, first_line

MAGIC = b"GGUF"
SUFFIX = ".gguf"
#: GGUF_TO_TRANSFORMERS_MAPPING keys that are metadata sections, not architectures
_NOT_ARCHITECTURES = ("general", "tokenizer")
#: general.file_type names (without gguf-py's ALL_ / MOSTLY_ prefix) of unquantized files
_FULL_PRECISION = ("F32", "F16", "BF16")


def is_gguf(path: Path) -> bool:
    """A `.gguf` file, or a directory with at least one `.gguf` file and no config.json."""
    if path.is_file():
        return path.suffix.lower() == SUFFIX
    return path.is_dir() and not (path / "config.json").is_file() and any(_gguf_files(path))


def _gguf_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == SUFFIX)


def gguf_file(path: Path) -> Path:
    """The GGUF file `path` names: itself, or the one `.gguf` in a directory (ModelError for several)."""
    if path.is_file():
        return path
    files = _gguf_files(path)
    if len(files) > 1:
        names = ", ".join(p.name for p in files[:5]) + (" ..." if len(files) > 5 else "")
        raise ModelError(f"{path} holds {len(files)} .gguf files ({names}): name the one to use in model.name")
    return files[0]


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in _NOT_ARCHITECTURES]


def read_field(fields: dict, key: str):
    """The value of metadata `key` in a GGUFReader's `fields`: a text for a string field, else the first scalar as a
    Python number; None when the file has no such key."""
    f = fields.get(key)
    if f is None or not f.data:
        return None
    part = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(part).decode("utf-8", "replace")
    return part.tolist()[0]


def inspect(path: Path) -> dict:
    """{architecture, quantization, name} of a GGUF file; ModelError (one line) for a file that is not GGUF, cannot be
    read (truncated, damaged) or holds an architecture the installed transformers cannot load."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read: {first_line(exc)}") from None
    if head != MAGIC:
        raise ModelError(f"{path}: not a GGUF file (it starts with {head!r}, a GGUF file with b'GGUF')")
    try:
        from gguf import GGUFReader, LlamaFileType

        fields = GGUFReader(str(path)).fields
        arch, name, file_type = (
            read_field(fields, k) for k in ("general.architecture", "general.name", "general.file_type")
        )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"{path}: not a readable GGUF file (truncated or damaged?): {first_line(exc, with_type=True)}"
        ) from None
    if not arch:
        raise ModelError(f"{path}: the GGUF metadata has no general.architecture")
    supported = supported_architectures()
    if arch not in supported and not (arch == "llama" and "mistral" in str(name or "").lower()):
        raise ModelError(
            f"{path}: GGUF architecture '{arch}' cannot be loaded by the installed transformers; it reads "
            f"{', '.join(supported)}"
        )
    quant = None
    if file_type is not None:
        try:
            quant = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            quant = f"file type {int(file_type)}"
    return {"architecture": arch, "quantization": quant, "name": name}


def content_digest(path: Path, cache: Path) -> str:
    """SHA-256 of the file, remembered in `cache` (a JSON index) per absolute path, size and modification time."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        index = json.loads(cache.read_text())
    except (OSError, ValueError):
        index = {}
    if isinstance(index, dict) and isinstance(index.get(key), str):
        return index[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    digest = h.hexdigest()
    index = index if isinstance(index, dict) else {}
    index[key] = digest
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        tmp.replace(cache)
    except OSError:
        pass  # the digest is only remembered to save time
    return digest


def resolve_gguf(path: Path) -> str:
    """The transformers directory converted from the GGUF file `path` names (converted once, see the module)."""
    from tuneforge.models.builtins import cache_dir
    from tuneforge.models.loader import cached_conversion, convert_into_cache

    file = gguf_file(path)
    info = inspect(file)
    digest = content_digest(file, cache_dir() / "gguf-digests.json")
    name = f"gguf-{digest[:16]}"  # the content, not the file name: a copy or a renamed file reuses the conversion
    if cached_conversion(name) is None and info["quantization"] not in (None, *_FULL_PRECISION):
        print(
            f"tuneforge: {file.name} is quantized ({info['quantization']}): its weights are dequantized to float32 "
            f"for training",
            file=sys.stderr,
        )
    try:
        return str(convert_into_cache(name, file, write_gguf, "about 20 s per 100M parameters"))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"{file}: transformers could not convert this GGUF ({info['architecture']}): "
            f"{first_line(exc, with_type=True)}"
        ) from None


def write_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantize a GGUF file into a plain safetensors directory (model + tokenizer with its chat template).
    ModelError when the tokenizer has more tokens than the model has embedding rows."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tok) > rows:
        raise ModelError(
            f"{gguf_path}: its tokenizer has {len(tok)} tokens but the model's embedding has {rows} rows: the GGUF's "
            f"vocabulary does not match its tensors"
        )
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
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
