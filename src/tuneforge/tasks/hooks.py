"""How a finished run is used, as two objects every task declares beside its training hooks:

    Task.inference: InferenceHooks   loading the run's input processor and head, predict / evaluate / logits
    Task.exports:   ExportHooks      export formats, the ONNX graph's inputs and outputs, merge and parity checks

The defaults here are for text models and their tokenizers; each task subclasses them next to its own module
(classification_hooks.py, causal_lm_hooks.py, image_hooks.py, multitask_hooks.py). The hooks hold no state:
one instance per task class, shared by every run of that task; a run (`run.model`, `.tokenizer`, `.meta` =
model/tuneforge.json, `.model_dir`) is passed to each call.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tuneforge.errors import ModelError

#: inputs of the merge equivalence check for text models
CHECK_TEXTS = [
    "A gripping, beautifully acted film.",
    "Dull, predictable and far too long.",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
]


class InferenceHooks:
    """A finished run in `tuneforge predict`, `eval`, `serve`, the web UI and as a distillation teacher.

    interface           `classify` (predict, eval, serve /v1/classify) or `chat` (chat, generate, serve
                        /v1/chat/completions)
    input_kind          `text` or `image`: what predict / serve / the web UI take
    load_processor      what turns raw inputs into model inputs, saved beside the weights
    head_kwargs         `from_pretrained` arguments that rebuild the task's head when loading
    predict / evaluate / logits   `classify` tasks; the defaults refuse in one line (a task that chats)
    score               one scalar per (prompt, completion) for runs that score answers (a reward model: predict
                        gives `{"score"}` per text); the default refuses
    cpu_bf16            whether `auto` precision autocasts to bf16 on a CPU with bf16 units (measured per task)
    """

    interface: ClassVar[str] = "classify"
    input_kind: ClassVar[str] = "text"
    #: whether `precision: auto` computes this task's runs in bf16 autocast on a CPU with bf16 units: set where it
    #: was measured faster at equal outputs (inference.precision; benchmarks/cpu_inference.py)
    cpu_bf16: ClassVar[bool] = False

    def load_processor(self, path: str, trust_remote_code: bool = False) -> Any:
        """What turns raw inputs into model inputs, saved beside the weights: here the tokenizer."""
        from tuneforge.models.loader import load_tokenizer

        return load_tokenizer(path, trust_remote_code)

    def head_kwargs(self, meta: dict) -> dict:
        """`from_pretrained` arguments that rebuild the task's head when a run is loaded (label map, ...)."""
        return {}

    def predict(self, run: Any, inputs: list, batch_size: int = 64) -> list[dict]:
        """What the run predicts for each input (a text, or an image where `input_kind` is `image`)."""
        raise ModelError(
            f"this run's task is '{run.meta['task']}': it answers with `tuneforge chat` / `generate`, not predict"
        )

    def evaluate(
        self, run: Any, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
    ) -> dict:
        """Metrics and reports of the run on labelled data (`source`), written into `out_dir`."""
        raise ModelError(f"eval --data does not apply to this run's task '{run.meta['task']}'")

    def logits(self, run: Any, inputs: list, pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """The head's outputs for `inputs` (and text pairs), in input order."""
        raise ModelError(f"this run's task '{run.meta['task']}' does not classify texts")

    def score(self, run: Any, prompts: list, completions: list[str], batch_size: int = 64) -> list[float]:
        """One scalar per (prompt, completion): how good the completion is as an answer to the prompt (a reward
        model; prompts are texts or message lists). The default refuses in one line: the run does not score."""
        raise ModelError(f"this run's task '{run.meta['task']}' does not score answers (a reward run does)")


class ExportHooks:
    """A finished run in `tuneforge merge` and `tuneforge export`.

    formats             `tuneforge export --format` values that apply to this task
    onnx_forward_kwargs extra forward arguments for the ONNX graph (for example no KV cache)
    onnx_usable         whether an ONNX export can stand in for the model in predict / serve (not only in parity
                        checks)
    parity_batch_size   rows per forward pass in export parity checks and benchmarks
    int8_scheme         how `--format int8` quantizes: `dynamic` (int8 weights and per-batch int8 activations;
                        faster on CPU) or `weight-only` (int8 weights on disk, fp32 compute; for models whose
                        activations have outliers that per-tensor activation scales cannot hold)
    onnx_inputs / onnx_outputs    the ONNX graph's inputs (names, example tensors, dynamic axes) and outputs
    check_inputs        a few model inputs for the merge equivalence check
    held_out_rows / batch / output_rows   held-out rows as model inputs, and per-row outputs (parity, speed)
    parity              how far an export's outputs are from the trained model's
    """

    formats: ClassVar[tuple[str, ...]] = ("merged", "onnx", "int8")
    onnx_forward_kwargs: ClassVar[dict] = {}
    onnx_usable: ClassVar[bool] = False
    parity_batch_size: ClassVar[int] = 32
    int8_scheme: ClassVar[str] = "dynamic"

    def onnx_outputs(self, meta: dict) -> list[tuple[str, int]]:
        """The ONNX graph's outputs as (name, width): the model's `logits` are split along the last axis into
        them in this order (and joined again when the export is loaded). Default: one output, `logits`."""
        return [("logits", -1)]

    def onnx_inputs(self, processor: Any) -> tuple[list[str], tuple, tuple]:
        """(input names, example tensors, dynamic shapes) for tracing the ONNX graph: token ids and mask (and
        token type ids where the tokenizer makes them), with dynamic batch and sequence axes."""
        import torch
        from torch.export import Dim

        names = [
            n
            for n in ("input_ids", "attention_mask", "token_type_ids")
            if n in getattr(processor, "model_input_names", ["input_ids", "attention_mask"])
        ]
        if "attention_mask" not in names:
            names.insert(1, "attention_mask")
        example = processor(
            ["an example input for tracing", "a second, longer example input for tracing"],
            padding=True,
            return_tensors="pt",
        )
        args = tuple(example[n] if n in example else torch.zeros_like(example["input_ids"]) for n in names)
        batch, seq = Dim("batch", min=1, max=1024), Dim("sequence", min=1, max=8192)
        return names, args, tuple({0: batch, 1: seq} for _ in names)

    def check_inputs(self, processor: Any, meta: dict, texts: list[str] | None = None) -> list[dict]:
        """Model inputs (one example each, unpadded) on which a merged model must agree with the trained one:
        `texts` (`tuneforge merge --text`) or a few fixed sentences."""
        max_length = int(meta.get("max_length") or 128)
        out = []
        for text in texts or CHECK_TEXTS:
            enc = processor(text, return_tensors="pt", truncation=True, max_length=max_length)
            out.append(
                {
                    k: v
                    for k, v in enc.items()
                    if k != "token_type_ids" or "token_type_ids" in getattr(processor, "model_input_names", [])
                }
            )
        return out

    def held_out_rows(self, split: Any, n: int) -> list[dict]:
        """The first `n` rows of a held-out split (as `Task.held_out` returns it) in the form `batch` takes;
        each row carries its `label` (None when the task has none)."""
        rows = []
        for r in split.select(range(n)):
            rows.append(
                {
                    "input_ids": list(r["input_ids"]),
                    "label": r.get("labels"),
                    **({"token_type_ids": list(r["token_type_ids"])} if "token_type_ids" in r else {}),
                }
            )
        return rows

    def batch(self, rows: list[dict], processor: Any) -> dict:
        """Rows of `held_out_rows` as one batch of model inputs (tensors): token ids right-padded, with the mask."""
        import torch

        pad_id = processor.pad_token_id if processor.pad_token_id is not None else 0
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        tt = np.zeros_like(ids)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], mask[i, :n] = r["input_ids"], 1
            if "token_type_ids" in r:
                tt[i, :n] = r["token_type_ids"]
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in rows[0]:
            out["token_type_ids"] = torch.from_numpy(tt)
        return out

    def output_rows(self, logits: np.ndarray, batch: dict, rows: list[dict]) -> list:
        """Per-row outputs of one export batch: a sequence-level head's [outputs], or a LM's [positions, vocab]
        of each row's real tokens."""
        return [logits[k] if logits.ndim == 2 else logits[k, : len(r["input_ids"])] for k, r in enumerate(rows)]

    def parity(
        self,
        reference: list[np.ndarray],
        exported: list[np.ndarray],
        rows: list[dict],
        split: str,
        meta: dict | None = None,
    ) -> dict:
        """How far an export's outputs are from the trained model's on the same rows of the run's split
        (`meta`: the run's model/tuneforge.json)."""
        diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, exported))
        agree = np.concatenate([np.atleast_1d(a.argmax(-1) == b.argmax(-1)) for a, b in zip(reference, exported)])
        return {"split": split, "rows": len(rows), "max_abs_logit_diff": diff, "argmax_agreement": float(agree.mean())}


def batched_logits(
    run, texts: list[str], pairs: list[str] | None, width: int, batch_size: int = 64, **encode: Any
) -> np.ndarray:
    """`run.model(**encodings).logits` for `texts` (and text pairs), `width` columns, batched by length so padding
    stays small; returned in input order (the text classifiers' `InferenceHooks.logits`). `encode`: tokenizer
    arguments that replace the defaults (for example `add_special_tokens=False`, `truncation="only_second"`)."""
    import torch

    max_length = run.meta.get("max_length", 512)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), width), dtype=np.float32)
    device = next(run.model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            options = {"truncation": True, "max_length": max_length, "padding": True, "return_tensors": "pt", **encode}
            enc = run.tokenizer([texts[j] for j in idx], [pairs[j] for j in idx] if pairs else None, **options).to(
                device
            )
            out[idx] = run.model(**enc).logits.float().cpu().numpy()
    return out
