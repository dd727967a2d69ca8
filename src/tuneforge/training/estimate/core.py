"""Per-device peak training memory before a run starts: `tuneforge estimate`, the engine's start-of-run lines and
its one-line out-of-memory error all come from `estimate_memory`.

Peak = weights + gradients + optimizer states + activations + loss head + overhead, per device:

  weights      every parameter at its dtype as loaded, quantized linear weights at their packed size (skeleton.py)
  gradients    trainable parameters at their dtype
  optimizer    the optimizer's states of the trainable parameters (states.py)
  activations  what autograd keeps for backward (activations.py)
  logits       the loss head's peak at the start of backward (states.py)
  overhead     CUDA context and workspaces (0.4 GiB), autocast's 16-bit copies of fp32 trainable weights, what the
               strategy adds (DDP's gradient bucket, FSDP/ZeRO-3's gathered blocks: states.py)
  generation   a task that generates inside a step (GRPO): the KV cache of every completion of the batch at full
               length, plus one row of logits each; it is freed before the step's forward pass, so the peak holds
               the larger of it and activations + loss head, not both

Everything is counted on the run's own model built on the `meta` device with the run's method applied through
the method contract, so the estimate never asks which task or method runs. Accuracy against measurements is in
benchmarks/estimate_accuracy.py and tests/test_estimate.py.
"""

from __future__ import annotations

import dataclasses

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.training.estimate.activations import Run, activations, image_side, liger_on
from tuneforge.training.estimate.result import GIB, Estimate
from tuneforge.training.estimate.skeleton import discover, torch_dtype
from tuneforge.training.estimate.states import check_strategy, loss_bytes, optimizer_bytes, shard

#: CUDA context, cuBLAS/cuDNN workspaces and allocator slack that `max_memory_allocated` does not show
CUDA_OVERHEAD = int(0.4 * GIB)


def estimate_memory(
    cfg: RunConfig,
    nproc: int = 1,
    strategy: str = "ddp",
    device: str = "cuda",
    *,
    bf16: bool = True,
    batch_size: int | None = None,
    seq_len: int | None = None,
) -> Estimate:
    """Per-device peak training memory of `cfg` on `nproc` devices sharded by `strategy`.

    `device`: "cuda" (a GPU; `bf16`: whether it computes in bf16, else `auto` dtypes resolve to float16) or "cpu".
    `batch_size` / `seq_len` override `train.batch_size` / `data.max_length` (for tables).
    Raises ConfigError for an unknown strategy or a model whose config cannot be read."""
    check_strategy(strategy, nproc)
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"device: '{device}' is not 'cuda' or 'cpu'")
    import torch

    m = discover(cfg, device, bf16)
    t = cfg.train
    if t.precision != "auto":
        precision = t.precision
    elif device == "cuda":
        precision = "bf16" if bf16 else "fp16"
    else:  # the rule a CPU run follows (this machine's CPU, the model's width)
        from tuneforge.config.environment import model_width, resolve_precision

        precision = resolve_precision("auto", model_width(m.hf_config)) if m.hf_config is not None else "fp32"
    autocast = precision in ("bf16", "fp16")
    weight_dtype_bytes = torch.empty((), dtype=torch_dtype(cfg.model.dtype, device, bf16)).element_size()
    seq = seq_len or cfg.data.max_length or 512
    from tuneforge.registry import TASKS

    # a task may turn each example into several rows of one forward pass (preference pairs: chosen and rejected)
    batch = (batch_size or t.batch_size) * TASKS.get(cfg.task.type).rows_of(cfg)
    liger = liger_on(t.liger, device)
    side = image_side(cfg, m.hf_config)
    r = Run(
        batch=batch,
        seq=seq,
        compute=2 if autocast else m.stream_bytes,
        stream=m.stream_bytes,
        autocast=autocast,
        liger=liger,
        checkpointing=t.gradient_checkpointing,
        device=device,
        image_side=side,
    )
    kept, recompute, act_notes = activations(m, r)
    loss, loss_note = loss_bytes(m, r)
    optimizer = t.optimizer if t.optimizer != "auto" else "adamw_fused"
    opt, opt_note = optimizer_bytes(m, optimizer)

    overhead = CUDA_OVERHEAD if device == "cuda" else 0
    notes = list(m.notes) + act_notes
    if autocast and m.trainable_dtype_bytes == 4:
        overhead += m.trainable_bytes // 2  # autocast caches a 16-bit copy of each fp32 weight it casts
    shares = shard(strategy, nproc, m, opt)
    overhead += shares.overhead
    # frozen copies the task keeps beside the model (a preference run's reference): the base weights again, whole on
    # each device (they are not sharded)
    copies = TASKS.get(cfg.task.type).frozen_copies(cfg, bool(m.adapter_parts))
    if copies:
        copy_bytes = m.weight_bytes - (m.trainable_bytes if m.adapter_parts else 0)
        shares = dataclasses.replace(shares, weights=shares.weights + len(copies) * copy_bytes)
        notes = [*notes, *copies]
    # the loss peak (start of backward) and one recomputed block (later in backward) do not overlap in time
    acts = kept + max(0, recompute - loss)
    generation = generation_bytes(m.hf_config, batch, TASKS.get(cfg.task.type).generated_tokens(cfg), r.compute)
    if generation:
        notes.append(f"generation inside each step: {batch} completions' KV cache at full length, before the forward")
    total = shares.weights + shares.gradients + shares.optimizer + max(acts + loss, generation) + overhead
    notes += [
        f"device {device}, weights {weight_dtype_bytes * 8}-bit as loaded, precision {precision}"
        + (" (autocast)" if autocast else ""),
        f"batch {batch} images of {side}x{side} pixels"
        if side
        else f"batch {batch} x {seq} tokens (data.max_length: the longest batch; shorter batches use less)",
        "gradient checkpointing "
        + (
            "on: block inputs kept, one block recomputed at a time"
            if t.gradient_checkpointing
            else "off: every block's activations kept"
        ),
        loss_note,
        opt_note,
        shares.note,
    ]
    if m.fused_adapters:
        notes.append("fused LoRA layers: each adapted layer keeps only its input and the rank-r product")
    if liger:
        notes.append("liger kernels on (train.liger): RMSNorm/SwiGLU keep fewer tensors")
    return Estimate(
        weights=shares.weights,
        trainable_weights=shares.trainable_weights,
        gradients=shares.gradients,
        optimizer=shares.optimizer,
        activations=acts,
        logits=loss,
        overhead=overhead,
        generation=generation,
        total=total,
        trainable_params=m.trainable_params,
        total_params=m.total_params,
        nproc=nproc,
        strategy=strategy,
        assumptions=notes,
    )


def generation_bytes(hf_config, rows: int, tokens: int, element: int) -> int:
    """The KV cache of `rows` sequences of `tokens` tokens (keys and values of every layer, `element` bytes each)
    plus one row of float32 logits per sequence; 0 when nothing is generated or the model's shape is unknown."""
    if not tokens or hf_config is None:
        return 0
    c = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    layers = getattr(c, "num_hidden_layers", None)
    heads = getattr(c, "num_attention_heads", None)
    hidden = getattr(c, "hidden_size", None)
    if not (layers and heads and hidden):
        return 0
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    vocab = getattr(c, "vocab_size", 0) or 0
    return 2 * layers * kv_heads * head_dim * rows * tokens * element + rows * vocab * 4
