"""A finished causal LM run: it chats (`tuneforge chat`, `generate`, serve /v1/chat/completions) rather than
predicting, and exports with one forward pass over every position (no KV cache), weight-only int8 and a
next-token parity report."""

from __future__ import annotations

import numpy as np

from tuneforge.tasks.hooks import ExportHooks, InferenceHooks


class ChatInference(InferenceHooks):
    """Loaded with its tokenizer; predict / evaluate / logits refuse (the defaults): it answers in chat."""

    interface = "chat"


class LMExports(ExportHooks):
    """Merged, ONNX, int8 and GGUF exports of a causal LM, compared position by position."""

    formats = ("merged", "onnx", "int8", "gguf")
    onnx_forward_kwargs = {"use_cache": False}  # one forward pass returns the logits of every position
    onnx_usable = False  # an ONNX graph without KV cache is for parity checks and onnxruntime users, not chat
    parity_batch_size = 4
    # dynamic int8 changed 63% of SmolLM2-135M's next-token choices (activation outliers); weight-only: none
    int8_scheme = "weight-only"

    def parity(
        self,
        reference: list[np.ndarray],
        exported: list[np.ndarray],
        rows: list[dict],
        split: str,
        meta: dict | None = None,
    ) -> dict:
        """Largest logit difference and how often both pick the same next token, over every real position."""
        diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, exported))
        agree = np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(reference, exported)])
        return {
            "split": split,
            "rows": len(rows),
            "max_abs_logit_diff": diff,
            "next_token_agreement": float(agree.mean()),
            "positions": int(agree.size),
        }
