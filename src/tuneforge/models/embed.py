"""Sentence embeddings of a pretrained encoder (frozen, mean-pooled): features for label-noise detection and
similarity, without training."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np


def embed_texts(
    model_path: str, texts: Sequence[str], max_length: int = 128, batch_size: int = 64, trust_remote_code: bool = False
) -> np.ndarray:
    """L2-normalised mean-pooled last-layer states of a pretrained encoder (no training), one row per text.

    Texts are embedded longest first, so each batch pads little."""
    import torch
    from transformers import AutoModel

    from tuneforge.models.loader import load_tokenizer

    tok = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # decoder tokenizers: padded positions are masked out of the mean anyway
        tok.pad_token = tok.eos_token
    model = AutoModel.from_pretrained(model_path, trust_remote_code=trust_remote_code, dtype=torch.float32).eval()
    accepted = set(inspect.signature(model.forward).parameters)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = tok(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            hidden = model(**{k: v for k, v in batch.items() if k in accepted}).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out
