"""Multi-process training: one run spread over N processes (`tuneforge train CONFIG --nproc N`), started by
`tuneforge.training.launch` through torchrun, trained by transformers' Trainer (accelerate underneath: DDP, FSDP2,
DeepSpeed ZeRO). Nothing here trains or shards anything itself: it translates `train.distributed` into the
Trainer's arguments and gives the engine what it needs to keep one run directory:

- rank 0 is the only process that writes the run directory (status.json, config.yaml, metrics.jsonl, data/,
  model/, eval/, efficiency.json) and holds its lock; it picks the directory and `share`s it with the others;
- data preparation runs once, on rank 0, and its result is `share`d (pickled through torch.distributed);
- every rank that fails writes one line into the launcher's scratch directory (`record_failure`), so the launcher
  can mark the run failed with the first real error even when rank 0 was only torn down because of it.

Outside a launch (WORLD_SIZE unset or 1) every function here is a no-op and `is_primary()` is True.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

#: set by the launcher for its children: a child never launches again
LAUNCHED_ENV = "TUNEFORGE_LAUNCHED"
#: the launcher's scratch directory: `run.json` (where rank 0 trains) and `rank-<R>.json` (a rank's failure)
LAUNCH_DIR_ENV = "TUNEFORGE_LAUNCH_DIR"


def world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def active() -> bool:
    """Whether this process is one of several training one run."""
    return world_size() > 1


def is_primary() -> bool:
    """Rank 0 (or the only process): the one that writes the run directory and prints."""
    return rank() == 0


def init(timeout_minutes: int = 30) -> None:
    """Join the process group now (before the Trainer would), through accelerate as the Trainer does: gloo on CPU,
    nccl on GPUs. The Trainer's own accelerate state then reuses it."""
    if not active():
        return
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(minutes=timeout_minutes))


def share(value=None):
    """Rank 0's `value` on every rank (any picklable object); the value itself outside a launch."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value if is_primary() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def _scratch() -> Path | None:
    d = os.environ.get(LAUNCH_DIR_ENV)
    return Path(d) if d and Path(d).is_dir() else None


def record_run(path: Path, target: Path) -> None:
    """Rank 0: tell the launcher where it trains (an overwrite trains beside the run it replaces)."""
    d = _scratch()
    if d is not None and is_primary():
        _write(d / "run.json", {"path": str(path), "target": str(target)})


def record_failure(message: str, exit_code: int) -> None:
    """This rank failed with `message` (one line): for the launcher, which reports the first real failure."""
    d = _scratch()
    if d is not None:
        _write(
            d / f"rank-{rank()}.json", {"rank": rank(), "time": time.time(), "message": message, "exit_code": exit_code}
        )


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# ---- train.distributed -> TrainingArguments ------------------------------------------------------------------
def block_classes(model) -> list[str]:
    """The model's transformer block class names, for FSDP's auto-wrap: its `_no_split_modules` (the classes
    transformers never splits across devices; embeddings excluded when blocks are named too), else the class of the
    blocks `models.blocks.find_blocks` finds."""
    inner = model
    for _ in range(4):  # PEFT wraps: PeftModel -> LoraModel -> the transformers model
        names = getattr(inner, "_no_split_modules", None)
        if names:
            names = sorted(set(names))
            blocks = [n for n in names if "Embedding" not in n]
            return blocks or names
        nxt = getattr(inner, "base_model", None)
        nxt = getattr(nxt, "model", nxt) if nxt is not None and nxt is not inner else None
        if nxt is None or nxt is inner:
            break
        inner = nxt
    try:
        from tuneforge.models.blocks import find_blocks

        blocks = find_blocks(model)[1]
        return sorted({type(b).__name__ for b in blocks})
    except Exception:
        return []


def fsdp_config(dist_cfg, model) -> dict:
    """TrainingArguments' `fsdp_config` (FSDP2) for `train.distributed.fsdp`."""
    f = dist_cfg.fsdp
    wrap = block_classes(model) if f.auto_wrap == "auto" else list(f.auto_wrap)
    config = {
        "version": 2,
        "reshard_after_forward": f.sharding != "shard_grad_op",
        "cpu_offload": f.cpu_offload,
        "activation_checkpointing": f.activation_checkpointing,
        "cpu_ram_efficient_loading": f.cpu_ram_efficient_loading,
        "state_dict_type": "FULL_STATE_DICT" if f.state_dict_type == "full" else "SHARDED_STATE_DICT",
    }
    if wrap:
        config["auto_wrap_policy"] = "TRANSFORMER_BASED_WRAP"
        config["transformer_layer_cls_to_wrap"] = wrap
    return config


def deepspeed_config(dist_cfg, precision: str) -> dict:
    """TrainingArguments' `deepspeed` dict for `train.distributed.deepspeed` ("auto" values are filled in by
    transformers from the Trainer's own settings: batch size, accumulation, clipping, learning rate)."""
    d = dist_cfg.deepspeed
    zero: dict = {"stage": d.stage, "overlap_comm": True, "contiguous_gradients": True}
    if d.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if d.stage == 3:
        # the saved model/ is the full 16-bit model, gathered from the shards (what a single process saves)
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        if d.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }


def hybrid_parallelism():
    """accelerate's ParallelismConfig for FSDP2 hybrid sharding: shards inside a node, replicas across nodes."""
    from accelerate.parallelism_config import ParallelismConfig

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    nodes = max(1, world_size() // max(local, 1))
    return ParallelismConfig(dp_replicate_size=nodes, dp_shard_size=local)


def training_arguments(cfg: RunConfig, model, precision: str) -> dict:
    """The TrainingArguments keyword arguments for `cfg.train.distributed` (empty outside a multi-process run
    with ddp: the Trainer's defaults are DDP)."""
    d = cfg.train.distributed
    # each process's loss is the mean over its own batch and the gradients are averaged across processes (DDP's
    # semantics). transformers' default (`average_tokens_across_devices`) instead multiplies every loss by the
    # number of processes, assuming it was divided by the token count of all processes; losses that are batch
    # means (classification, the tasks' own losses) would then train with N times the gradient
    out: dict = {"ddp_timeout": d.timeout_minutes * 60, "average_tokens_across_devices": False}
    if d.strategy == "fsdp":
        out["fsdp"] = True
        out["fsdp_config"] = fsdp_config(d, model)
        if d.fsdp.sharding == "hybrid":
            out["parallelism_config"] = hybrid_parallelism()
    elif d.strategy == "deepspeed":
        out["deepspeed"] = deepspeed_config(d, precision)
    return out


def sharded(cfg: RunConfig) -> bool:
    """Whether the model's weights are split across processes (fsdp, deepspeed stage 3): saving then gathers them."""
    d = cfg.train.distributed
    return d.strategy == "fsdp" or (d.strategy == "deepspeed" and d.deepspeed.stage == 3)
