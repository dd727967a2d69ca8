"""Helpers of the method tests: tiny random Llama, method construction, a few training steps."""

from __future__ import annotations

import torch

from tuneforge.methods import METHODS, MethodContext
from tuneforge.models.loader import load_model, write_run_metadata


def save_tiny_llama(d, tie: bool = False) -> str:
    """A 2-layer, hidden-32 Llama causal LM with the conftest WordPiece tokenizer, saved into `d`."""
    from sft_common import make_tiny_llama

    from conftest import _vocab, wordpiece_tokenizer

    tok = wordpiece_tokenizer(_vocab())
    return make_tiny_llama(d, tok, tie=tie, max_positions=128, chat=False, vocab_size=len(_vocab()))


def make_method(name: str, **cfg):
    cls = METHODS.get(name)
    return cls(cls.Config.model_validate({"name": name, **cfg}))


#: what the tasks keep out of quantization (MethodContext.full_precision_modules): classification's heads, the
#: causal LM's output layer
FULL_PRECISION = {"bert": ("classifier", "score", "qa_outputs", "pre_classifier"), "llama": ("lm_head",)}


def head_modules_for(kind: str, model) -> list[str]:
    from tuneforge.tasks.base import Task

    return Task.head_modules(None, model) if kind == "bert" else []


def build(kind: str, path: str, method, seed: int = 0):
    """Load the tiny base as the task's model class (with the method's load kwargs) and apply the method, as
    the engine does: the context's full-precision names before loading, the head modules after."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    ctx = MethodContext(full_precision_modules=FULL_PRECISION["bert" if kind == "bert" else "llama"])
    if kind == "bert":
        model = load_model(path, AutoModelForSequenceClassification, "float32", num_labels=2, **method.load_kwargs(ctx))
    else:
        model = load_model(path, AutoModelForCausalLM, "float32", **method.load_kwargs(ctx))
    ctx.head_modules = head_modules_for(kind, model)
    return method.apply(model, ctx), ctx


def batch(kind: str, vocab: int = 60, n: int = 4, length: int = 10, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    b["labels"] = torch.tensor([i % 2 for i in range(n)]) if kind == "bert" else ids.clone()
    return b


def train_steps(model, method, b: dict, steps: int = 5, lr: float = 1e-2) -> tuple[float, float]:
    """A few AdamW steps on the method's groups; returns the eval-mode loss (no dropout) before and after."""

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return float(model(**b).loss)

    start = eval_loss()
    opt = torch.optim.AdamW(method.param_groups(model, lr, 0.01))
    model.train()
    for _ in range(steps):
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return start, eval_loss()


@torch.no_grad()
def logits(model, b: dict) -> torch.Tensor:
    model.eval()
    return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()


def save_run_model(method, model, out_dir, base_path: str, kind: str) -> None:
    """What the engine writes into model/: the method's artefacts and tuneforge.json."""
    method.save(model, str(out_dir))
    write_run_metadata(
        out_dir,
        {
            "task": "classification" if kind == "bert" else "causal_lm",
            "method": method.name,
            "base_model": base_path,
            "dtype": "float32",
            "method_config": method.cfg.model_dump(mode="json"),
        },
    )


def base_builder(kind: str, method):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    ctx = MethodContext(full_precision_modules=FULL_PRECISION["bert" if kind == "bert" else "llama"])

    def build_base(path: str):
        if kind == "bert":
            return load_model(
                path, AutoModelForSequenceClassification, "float32", num_labels=2, **method.load_kwargs(ctx)
            )
        return load_model(path, AutoModelForCausalLM, "float32", **method.load_kwargs(ctx))

    return build_base
