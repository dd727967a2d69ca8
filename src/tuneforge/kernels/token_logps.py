"""Per-token log-probabilities of target tokens from a causal LM's last hidden states, chunk by chunk.

Preference and GRPO losses need log p(token) of every answer token (preference losses sum them per answer).
Computing them from the model's logits would hold a (rows x length x vocabulary) tensor, plus its float32
copy and its gradient: for a 128k vocabulary at 2 x 4 x 1024 tokens that is 8 GiB. Here the hidden states are
projected through the output layer a chunk of rows at a time, each chunk reduced to its target log-probs at once;
the chunk is checkpointed, so backward recomputes its logits instead of keeping them. The extra peak memory is one
chunk's logits, about the size of the hidden states (kernels/chunked_ce.default_chunk_rows).

Position t predicts labels[t + 1], as in transformers' causal LMs; labels equal to `ignore_index` do not count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from tuneforge.kernels.chunked_ce import IGNORE_INDEX, default_chunk_rows


def _chunk_logps(head: Callable[[Tensor], Tensor], hidden: Tensor, targets: Tensor) -> Tensor:
    logits = head(hidden).float()
    picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _chunk_logps_entropy(head: Callable[[Tensor], Tensor], hidden: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(target log-probs, entropy of each row's distribution; the entropy without gradient: it is only logged)."""
    logits = head(hidden).float()
    norm = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) - norm
    with torch.no_grad():
        entropy = norm - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return picked, entropy


def token_logps(
    hidden: Tensor,
    head: Callable[[Tensor], Tensor],
    labels: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_rows: int | None = None,
    vocab_size: int | None = None,
    entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """log p(labels[:, t + 1] | ...) at every position t, float32, shaped like `labels`; 0 where the shifted label
    is `ignore_index` (and at the last position). `hidden` (B, T, H): the final hidden states; `head`: the output
    layer (a module or function mapping (..., H) to (..., V)); `vocab_size` only sizes the chunks (default: read
    from `head.weight`). Gradients flow to `hidden` and to the head's parameters. `entropy`: also return the
    entropy of the predicted distribution at the same positions (0 where there is no target; no gradient), from the
    same chunks of logits."""
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and labels {tuple(labels.shape)} do not match")
    shifted = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:].to(hidden.device)
    h = hidden.reshape(-1, hidden.shape[-1])
    y = shifted.reshape(-1)
    keep = (y != ignore_index).nonzero(as_tuple=True)[0]  # only target rows are projected
    out = torch.zeros(y.shape[0], dtype=torch.float32, device=hidden.device)
    if keep.numel() == 0:
        empty = out.view(labels.shape) + 0.0 * hidden.sum()  # keeps the graph: a batch with no target still backprops
        return (empty, torch.zeros_like(out).view(labels.shape)) if entropy else empty
    if vocab_size is None:
        weight = getattr(head, "weight", None)
        vocab_size = int(weight.shape[0]) if weight is not None else 32768
    rows = chunk_rows or default_chunk_rows(int(keep.numel()), h.shape[1], vocab_size)
    hk, yk = h.index_select(0, keep), y.index_select(0, keep)
    fn = _chunk_logps_entropy if entropy else _chunk_logps
    parts = []
    for start in range(0, hk.shape[0], rows):
        hc, yc = hk[start : start + rows], yk[start : start + rows]
        if torch.is_grad_enabled() and hc.requires_grad:
            parts.append(checkpoint(fn, head, hc, yc, use_reentrant=False))
        else:
            parts.append(fn(head, hc, yc))
    if not entropy:
        return out.index_put((keep,), torch.cat(parts)).view(labels.shape)
    logps = out.index_put((keep,), torch.cat([p[0] for p in parts]))
    ent = torch.zeros_like(out).index_put((keep,), torch.cat([p[1] for p in parts]))
    return logps.view(labels.shape), ent.view(labels.shape)
