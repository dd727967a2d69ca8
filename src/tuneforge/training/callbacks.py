"""Trainer callbacks of the one training path: metrics log, readable eval lines, efficiency meter."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from tuneforge.evaluation.speed import peak_rss_bytes


class MetricsLogCallback(TrainerCallback):
    """Appends one JSON row per logging step to metrics.jsonl and prints one line per evaluation.

    `resume_step`: the step of the checkpoint a resumed run continues from. Rows the interrupted process logged
    after that step are dropped before training goes on (they are logged again), so no step appears twice."""

    def __init__(self, path, resume_step: int | None = None):
        self.path = path
        self.resume_step = resume_step

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.resume_step is not None:
            drop_rows_after(self.path, self.resume_step)

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
        items = [
            f"{k.removeprefix('eval_')}={v:.4f}"
            for k, v in metrics.items()
            if isinstance(v, float) and k != "epoch" and not k.endswith(("_runtime", "_per_second"))
        ]
        # a task with many metrics (multi-task: every sub-task's) puts the important ones first; the rest are in
        # metrics.jsonl
        shown = " ".join(items[:10]) + (f" (+{len(items) - 10} more in metrics.jsonl)" if len(items) > 10 else "")
        print(f"eval  epoch {state.epoch or 0:.2f}  step {state.global_step}: {shown}", file=sys.stderr, flush=True)


def drop_rows_after(path, step: int) -> int:
    """Keep the metrics.jsonl rows up to `step` (a checkpoint's step), minus an end-of-training summary at that
    step (a resumed run logs it again). Atomic rewrite; returns how many rows were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a kill
            dropped += 1
            continue
        s = row.get("step") if isinstance(row, dict) else None
        summary = "train_loss" in row and "loss" not in row  # the row trainer.train logs when it ends
        if isinstance(s, int) and (s > step or (s == step and summary)):
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        os.replace(tmp, path)
    return dropped


class CheckpointMarkerCallback(TrainerCallback):
    """Marks a checkpoint complete. The Trainer calls on_save after _save_checkpoint has written every file
    (weights, optimizer, scheduler, RNG state, trainer_state.json) and rotated old checkpoints; transformers
    writes them in place, so without this marker a checkpoint cut by a kill looks like any other."""

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            from tuneforge.training.checkpoints import CHECKPOINT_MARKER
            from tuneforge.training.jsonfile import write_json

            write_json(ckpt / CHECKPOINT_MARKER, {"step": state.global_step, "time": round(time.time(), 3)})


class PruneCallback(TrainerCallback):
    """Hands each evaluation's selection metric to `report(step, value)`; when it answers True, training stops
    and the engine ends the run `pruned` (see `tuneforge.training.engine.train`). The engine knows nothing of
    who decides: `tuneforge search` passes a function that reports to an Optuna trial and asks it.

    `metric`: the selection metric's name without the `eval_` prefix (cfg.eval.metric)."""

    def __init__(self, metric: str, report):
        self.metric = metric
        self.report = report
        self.pruned_at_step: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.metric}")
        if not isinstance(value, (int, float)) or self.pruned_at_step is not None:
            return
        if self.report(state.global_step, float(value)):
            self.pruned_at_step = state.global_step
            control.should_training_stop = True


class QuietProgressCallback(ProgressCallback):
    """The Trainer's progress bars without its raw dict printing (MetricsLogCallback prints eval lines)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)


def peak_memory_mb() -> dict:
    out = {"peak_rss_mb": round(peak_rss_bytes() / 2**20, 1)}
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

    def elapsed(self) -> float:
        """Seconds of training so far (evaluation excluded)."""
        return self.train_seconds + (time.perf_counter() - self._t if self._t is not None else 0.0)


class TimeBudgetCallback(TrainerCallback):
    """`train.max_minutes`: training stops at the end of the first optimizer step after the budget (training time,
    evaluation excluded, of this process); the model is saved and evaluated as for a finished run. With several
    processes rank 0's clock decides for all, so every rank stops at the same step."""

    def __init__(self, minutes: float, meter: EfficiencyCallback, share=None):
        self.seconds = 60.0 * minutes
        self.meter = meter
        self.share = share  # broadcasts rank 0's decision (training.distributed.share); None: one process
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.meter.elapsed() >= self.seconds
        if self.share is not None:
            stop = self.share(stop)
        if stop and self.stopped_at is None:
            self.stopped_at = state.global_step
            control.should_training_stop = True
            print(
                f"tuneforge: train.max_minutes={self.seconds / 60:g} reached: training stops after step "
                f"{state.global_step} of {state.max_steps}",
                file=sys.stderr,
                flush=True,
            )
