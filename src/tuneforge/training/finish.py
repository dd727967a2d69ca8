"""What a finished (or pruned) run leaves besides its model: efficiency.json's training figures, the best validation
metrics, and the checkpoints dropped once they are no longer needed to resume."""

from __future__ import annotations

import os
import shutil

import torch

from tuneforge.training.callbacks import peak_memory_mb
from tuneforge.training.rundir import RunDir


def efficiency_report(prepared, state, meter, train_out, params: dict, args) -> dict:
    """efficiency.json's training part: time, throughput, memory, parameters, device."""
    # a packed data set has fewer rows than examples: samples/s counts examples (`sizes.train`) when the task says
    n_train = prepared.sizes.get("train", len(prepared.train))
    epochs_done = float(state.epoch or 0.0)
    samples = n_train * epochs_done
    tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
    secs = meter.train_seconds or train_out.metrics.get("train_runtime", 0.0)
    return {
        "train_seconds": round(secs, 3),
        "eval_seconds": round(meter.eval_seconds, 3),
        "time_to_first_step_seconds": round(meter.first_step_seconds or 0.0, 3),
        "train_samples": int(round(samples)),
        "train_tokens": tokens,
        "train_samples_per_second": round(samples / secs, 3) if secs else None,
        "train_tokens_per_second": round(tokens / secs, 1) if secs else None,
        "global_steps": state.global_step,
        "epochs": round(epochs_done, 4),
        **peak_memory_mb(),
        **params,
        **prepared.efficiency,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "torch_threads": torch.get_num_threads(),
    }


def best_validation(history: list[dict], best_metric, metric: str, greater: bool) -> dict:
    evals = [h for h in history if any(k.startswith("eval_") for k in h)]
    if not evals:
        return {}
    key = f"eval_{metric}"
    scored = [h for h in evals if key in h]
    best = (max if greater else min)(scored, key=lambda h: h[key]) if scored else evals[-1]
    return {
        k.removeprefix("eval_"): v
        for k, v in best.items()
        if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))
    } | {"epoch": best.get("epoch")}


def drop_checkpoints_if_done(run: RunDir) -> None:
    # the final model is in model/; checkpoints exist only to resume an unfinished run. Renamed away first, so a
    # kill during the deletion never leaves a marked-complete checkpoint with some of its files gone
    if os.environ.get("TUNEFORGE_KEEP_CHECKPOINTS") != "1" and run.checkpoints.is_dir():
        doomed = run.path / "checkpoints.dropped"
        shutil.rmtree(doomed, ignore_errors=True)
        run.checkpoints.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
