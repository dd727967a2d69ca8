"""Fused linear + cross-entropy that never materialises the full (tokens x vocabulary) logits.

For a Llama-3.2-1B shape at batch 8 x 2048 the logits are 16384 x 128256 values: 4 GiB in bf16, 8 GiB as
the float32 copy the loss upcasts to, and again as much for their gradient. Here the tokens are processed
in chunks of rows; for each chunk the logits are computed, reduced to the loss, and turned into the
gradients for the hidden states and (when it trains) the output weight right away.

Gradients are computed in the forward pass and stashed, not recomputed in backward: the chunk's logits are
already there, and the gradient of the loss with respect to them is `softmax - onehot`, which costs one
in-place pass. Recomputing in backward would redo the (chunk x hidden x vocabulary) product, a third more
GEMM FLOPs for the head. The price is holding one hidden-states-sized gradient (and, for full fine-tuning,
a weight-sized one) from forward to backward; both are small next to the logits. This is only valid because
the loss is the final scalar of the graph: backward multiplies the stashed gradients by the incoming scalar
gradient (1, or the gradient-scaler's scale).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

IGNORE_INDEX = -100


def default_chunk_rows(n_rows: int, hidden: int, vocab: int) -> int:
    """Rows per chunk so that one chunk's logits hold about as many values as the hidden states:
    the extra peak memory stays the size of one activation, whatever the vocabulary."""
    n_chunks = max(1, math.ceil(vocab / max(hidden, 1)))
    rows = math.ceil(n_rows / n_chunks)
    return max(8, min(n_rows, 8 * math.ceil(rows / 8)))  # multiples of 8 keep GEMMs on tensor-core shapes


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        labels: Tensor,
        divisor: Tensor,
        chunk_rows: int,
        ignore_index: int,
        need_dh: bool,
        need_dw: bool,
    ):
        n = hidden.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # softmax in fp32 (fp64 when given fp64)
        # under autocast (a CPU's bf16 units, or a GPU) the GEMMs run in its dtype, as nn.Linear's would; the
        # explicit casts also cover the `out=` and in-place GEMMs below, which autocast leaves alone
        device = hidden.device.type
        mm = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        w_mm = weight.to(mm)
        loss_sum = torch.zeros((), dtype=acc, device=hidden.device)
        dh = torch.empty_like(hidden) if need_dh else None
        # bf16/fp16 weights: accumulate the weight gradient in the weight's dtype with one GEMM per chunk
        # (each GEMM accumulates in fp32 internally), as a plain autograd matmul would produce it
        dw = torch.zeros_like(weight) if need_dw else None
        inv = (1.0 / divisor.to(acc)) if (need_dh or need_dw) else None
        for start in range(0, n, chunk_rows):
            h = hidden[start : start + chunk_rows]
            y = labels[start : start + chunk_rows]
            logits = (h.to(mm) @ w_mm.t()).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            valid = y != ignore_index
            y_safe = torch.where(valid, y, torch.zeros_like(y)).unsqueeze(1)
            target = logits.gather(1, y_safe).squeeze(1)
            loss_sum += ((lse - target) * valid).sum()
            if not (need_dh or need_dw):
                continue
            # d(sum of NLL)/d(logits) = softmax - onehot(target), zero on ignored rows; built in place
            g = logits.sub_(lse.unsqueeze(1)).exp_()
            g.scatter_add_(1, y_safe, -torch.ones_like(target).unsqueeze(1))
            g.mul_((valid.to(acc) * inv).unsqueeze(1))
            g = g.to(mm)
            if need_dh:
                if mm == hidden.dtype:
                    torch.mm(g, w_mm, out=dh[start : start + chunk_rows])
                else:
                    dh[start : start + chunk_rows] = g @ w_mm
            if need_dw:
                if mm == weight.dtype:
                    dw.addmm_(g.t(), h.to(mm))
                else:
                    dw += (g.t() @ h.to(mm)).to(dw.dtype)
            del logits, g
        ctx.save_for_backward(dh, dw)
        return loss_sum / divisor.to(acc)

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        dh, dw = ctx.saved_tensors
        dh = dh * grad_loss.to(dh.dtype) if dh is not None else None
        dw = dw * grad_loss.to(dw.dtype) if dw is not None else None
        return dh, dw, None, None, None, None, None, None


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    num_items_in_batch=None,
    ignore_index: int = IGNORE_INDEX,
    chunk_rows: int | None = None,
) -> Tensor:
    """Cross-entropy of `hidden @ weight.T` against `labels`, computed chunk by chunk.

    Args:
        hidden: (..., H) hidden states (any leading shape; flattened to rows).
        weight: (V, H) output projection (an lm_head weight, tied to the embeddings or not).
        labels: (...) target ids matching hidden's leading shape; `ignore_index` rows do not count.
        num_items_in_batch: divide the summed loss by this (the Trainer's count of target tokens over all
            gradient-accumulation micro-batches); default: the number of non-ignored labels here (a mean).
        chunk_rows: rows per chunk; default `default_chunk_rows`.
    Returns a float32 scalar (float64 for float64 inputs). Gradients flow to `hidden` and `weight` if they require them.
    Raises ValueError on mismatched shapes."""
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and labels {tuple(labels.shape)} do not match")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight {tuple(weight.shape)} does not project hidden size {hidden.shape[-1]}")
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1).to(h.device)
    keep = y != ignore_index
    if num_items_in_batch is None:
        divisor = keep.sum().clamp(min=1)
    else:
        divisor = torch.as_tensor(num_items_in_batch, device=h.device)
    if not bool(keep.all()):
        # only the rows with a target reach the output layer (an SFT batch's prompts and padding do not): their
        # loss and gradient are zero anyway, so skipping their logits changes nothing but the work
        rows_kept = keep.nonzero().squeeze(1)
        h, y = h.index_select(0, rows_kept), y.index_select(0, rows_kept)
    rows = chunk_rows or default_chunk_rows(h.shape[0], h.shape[1], weight.shape[0])
    grad = torch.is_grad_enabled()
    w = weight if weight.dtype == h.dtype else weight.to(h.dtype)
    return _LinearCrossEntropy.apply(
        h, w, y, divisor, rows, ignore_index, grad and hidden.requires_grad, grad and weight.requires_grad
    )


def causal_lm_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    num_items_in_batch=None,
    ignore_index: int = IGNORE_INDEX,
    chunk_rows: int | None = None,
) -> Tensor:
    """Next-token loss as transformers' causal LMs compute it (position t predicts labels[t + 1]), without
    the logits. The labels are shifted (padded with `ignore_index`) rather than the hidden states sliced,
    so no copy of the hidden states is made."""
    shifted = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return linear_cross_entropy(
        hidden, weight, shifted, num_items_in_batch=num_items_in_batch, ignore_index=ignore_index, chunk_rows=chunk_rows
    )


# ---- applying it to a transformers causal LM ------------------------------------------------------------
def _causal_lm_core(model):
    """The transformers *ForCausalLM module inside `model` (a PEFT wrapper is looked through)."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return core


def chunked_loss_unsupported(model) -> str | None:
    """Why `use_chunked_loss` cannot apply to this model, or None when it can."""
    core = _causal_lm_core(model)
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    if head is None or not hasattr(core, "get_decoder"):
        return "the model has no output embeddings / decoder to split the loss from"
    if type(head) is not torch.nn.Linear:
        return f"its output layer is a {type(head).__name__} (adapted or quantized), not a plain Linear"
    if head.bias is not None:
        return "its output layer has a bias"
    cfg = getattr(core, "config", None)
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        if getattr(cfg, key, None) not in (None, 1, 1.0):
            return f"the model transforms its logits ({key})"
    return None


def use_chunked_loss(model, chunk_rows: int | None = None) -> bool:
    """Make the causal LM compute its *training* loss from the hidden states with `causal_lm_loss`.

    Only calls in training mode, with grad enabled and `labels` given, take the new path (their output has
    `logits=None`: nothing in training reads them); evaluation and generation run the model's own forward,
    so metrics that need logits are unchanged. Returns False (model untouched) where
    `chunked_loss_unsupported` gives a reason."""
    if chunked_loss_unsupported(model) is not None:
        return False
    core = _causal_lm_core(model)
    if getattr(core, "_tf_chunked_loss", False):
        return True
    original = core.forward

    def forward(
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        **kwargs,
    ):
        if labels is None or not core.training or not torch.is_grad_enabled() or logits_to_keep:
            return original(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                inputs_embeds=inputs_embeds,
                labels=labels,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                **kwargs,
            )
        from transformers.modeling_outputs import CausalLMOutputWithPast

        num_items = kwargs.pop("num_items_in_batch", None)
        out = core.get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        loss = causal_lm_loss(
            hidden, core.get_output_embeddings().weight, labels, num_items_in_batch=num_items, chunk_rows=chunk_rows
        )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=None,
            past_key_values=getattr(out, "past_key_values", None),
            hidden_states=getattr(out, "hidden_states", None),
            attentions=getattr(out, "attentions", None),
        )

    forward.__wrapped__ = original  # keeps inspect.signature (the Trainer looks for **kwargs) meaningful
    core.forward = forward
    core._tf_chunked_loss = True
    return True
