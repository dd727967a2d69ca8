"""The states a training step holds beside its activations, per device: optimizer states, the loss head's peak,
and how a multi-device strategy divides weights, gradients and optimizer states.

  optimizer    AdamW: two states at the parameter's dtype; 8-bit (bitsandbytes): 2 bytes/param (+1.6%),
               tensors under 4096 values stay 32-bit; paged: counted in full (it can spill to CPU)
  logits       the loss: full logits cost 12 bytes x vocabulary per token at the start of backward (fp32 copy,
               log-softmax output and its gradient); the chunked loss (`train.chunked_loss`) one chunk of rows

Sharding (`strategy`, with `nproc` devices): ddp keeps everything (+ a gradient bucket copy), deepspeed-zero2
divides gradients and optimizer states, fsdp / deepspeed-zero3 also the weights (+ two gathered blocks);
activations are never divided (each device runs its own batch).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.errors import ConfigError
from tuneforge.registry import closest
from tuneforge.training.estimate.activations import Run, transformer_blocks
from tuneforge.training.estimate.skeleton import Skeleton

STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")


def check_strategy(strategy: str, nproc: int) -> None:
    """ConfigError for a strategy not in STRATEGIES or a device count that is not a positive integer."""
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"--strategy: unknown strategy '{strategy}'{closest(strategy, STRATEGIES)}; one of: {', '.join(STRATEGIES)}"
        )
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc: must be a positive number of devices, got {nproc}")


def loss_bytes(m: Skeleton, r: Run) -> tuple[int, str]:
    """Peak bytes of the loss computation and a note."""
    from tuneforge.kernels.chunked_ce import default_chunk_rows

    core = m.model.get_base_model() if hasattr(m.model, "get_base_model") else m.model
    try:
        head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    except NotImplementedError:
        head = None
    vocab = getattr(head, "out_features", 0) if head is not None else 0
    tokens = r.batch * r.seq
    if not vocab:
        return 0, "loss head: small (no vocabulary-sized logits)"
    if m.chunked_loss:
        h = m.hf_config.hidden_size
        rows = default_chunk_rows(tokens, h, vocab)
        dw = vocab * h * r.compute if head.weight.requires_grad else 0
        return rows * vocab * (
            4 + r.compute
        ) + tokens * h * r.compute + dw, f"chunked loss: {rows} rows x {vocab} vocabulary per chunk"
    return 12 * vocab * tokens, f"full logits: {tokens} tokens x {vocab} vocabulary (fp32 copy, log-softmax, gradient)"


def optimizer_bytes(m: Skeleton, optimizer: str) -> tuple[int, str]:
    """Bytes of the optimizer states of the trainable parameters (`train.optimizer`, resolved) and a note."""
    if "8bit" in optimizer:
        big = sum(n for n in m.trainable_sizes if n >= 4096)
        small = m.trainable_params - big
        note = "8-bit AdamW (bitsandbytes): 2 bytes/param + block scales" + (
            "; paged: can spill to CPU, counted in full" if optimizer.startswith("paged") else ""
        )
        return int(big * (2 + 8 / 256)) + small * 8, note
    return 2 * m.trainable_bytes, f"AdamW: 2 states x {m.trainable_dtype_bytes} bytes/param"


@dataclass
class Shares:
    """Per-device bytes of the states under a strategy, the overhead the strategy adds, and a note."""

    weights: int
    trainable_weights: int
    gradients: int
    optimizer: int
    overhead: int
    note: str


def shard(strategy: str, nproc: int, m: Skeleton, optimizer: int) -> Shares:
    """What each of `nproc` devices holds of the weights, gradients and optimizer states (`optimizer` bytes) of `m`
    under `strategy`, and what the strategy adds: DDP a gradient bucket copy, FSDP / ZeRO-3 two gathered blocks
    (the block computing and the one prefetched)."""
    weights, grads, trainable_w = m.weight_bytes, m.trainable_bytes, m.trainable_bytes
    if nproc == 1:
        return Shares(weights, trainable_w, grads, optimizer, 0, "no sharding")
    if strategy == "ddp":
        return Shares(
            weights,
            trainable_w,
            grads,
            optimizer,
            grads,
            f"DDP on {nproc} devices: full replica each, plus a gradient bucket copy",
        )
    if strategy == "deepspeed-zero2":
        return Shares(
            weights,
            trainable_w,
            -(-grads // nproc),
            -(-optimizer // nproc),
            0,
            f"ZeRO-2 on {nproc} devices: gradients and optimizer states divided",
        )
    gathered = 2 * m.weight_bytes // (len(transformer_blocks(m.model)) or 1)
    return Shares(
        -(-weights // nproc),
        -(-trainable_w // nproc),
        -(-grads // nproc),
        -(-optimizer // nproc),
        gathered,
        f"{'FSDP full shard' if strategy == 'fsdp' else 'ZeRO-3'} on {nproc} devices: weights, "
        f"gradients and optimizer states divided; two gathered blocks in overhead",
    )
