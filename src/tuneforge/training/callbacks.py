"""Trainer callbacks of the one training path: metrics log, readable eval lines, efficiency meter."""
from __future__ import annotations

import json
import resource
import sys
import time

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback


class MetricsLogCallback(TrainerCallback):
    """Appends one JSON row per logging step to metrics.jsonl and prints one line per evaluation."""

    def __init__(self, path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": round(time.time(), 3)}
        row.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        shown = " ".join(f"{k.removeprefix('eval_')}={v:.4f}" for k, v in metrics.items()
                         if isinstance(v, float) and k != "epoch" and not k.endswith(("_runtime", "_per_second")))
        print(f"eval  epoch {state.epoch or 0:.2f}  step {state.global_step}: {shown}", file=sys.stderr, flush=True)


class QuietProgressCallback(ProgressCallback):
    """The Trainer's progress bars without its raw dict printing (MetricsLogCallback prints eval lines)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)


def peak_memory_mb() -> dict:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_gpu_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


class EfficiencyCallback(TrainerCallback):
    """Measures training time with evaluation excluded (the trainer calls pause/resume around it)."""

    def __init__(self):
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.first_step_seconds = None
        self._t = None
        self._t_start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._t_start = self._t = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step_seconds is None and self._t_start is not None:
            self.first_step_seconds = time.perf_counter() - self._t_start

    def pause(self):
        if self._t is not None:
            self.train_seconds += time.perf_counter() - self._t
            self._t = None

    def resume(self):
        if self._t is None:
            self._t = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.pause()
