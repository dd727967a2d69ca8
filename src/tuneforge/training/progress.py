"""Progress where people look. In a terminal the Trainer's bar shows progress; written to a file (CI logs, `nohup`,
the web UI's log pane) the bar is off and a run would print nothing between its start and its first evaluation,
which looks like a hang (the peers' most common complaint). `ProgressLines` prints one line every `interval`
seconds instead: step/total, loss, steps/s and the time left."""

from __future__ import annotations

import time
from collections.abc import Callable

from transformers import TrainerCallback

#: seconds between two progress lines (TUNEFORGE_PROGRESS_SECONDS overrides it, e.g. for tests)
DEFAULT_INTERVAL = 30.0


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`: short enough for a progress line."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(step: int, total: int, loss: float | None, rate: float | None, elapsed: float) -> str:
    """One progress line: `step 40/120 (33%)  loss 0.5312  0.42 steps/s  elapsed 1m35s  ETA 3m10s`."""
    parts = [f"step {step}/{total} ({100 * step / total:.0f}%)" if total else f"step {step}"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if rate:
        parts.append(f"{rate:.2f} steps/s")
    parts.append(f"elapsed {duration(elapsed)}")
    if rate and total and step < total:
        parts.append(f"ETA {duration((total - step) / rate)}")
    return "tuneforge: " + "  ".join(parts)


class ProgressLines(TrainerCallback):
    """Writes a progress line through `write` after the first step, then at most every `interval` seconds, and
    once when training ends. The rate counts only this process's steps (a resumed run starts from its checkpoint);
    `eval_seconds()` (the engine's efficiency meter) says how much of the elapsed time evaluation took, which the
    rate leaves out."""

    def __init__(
        self,
        write: Callable[[str], None],
        interval: float = DEFAULT_INTERVAL,
        eval_seconds: Callable[[], float] = lambda: 0.0,
    ):
        self.write, self.interval, self.eval_seconds = write, float(interval), eval_seconds
        self.loss: float | None = None
        self._start = self._last = 0.0
        self._first_step = 0
        self._eval_at_start = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        self._last = float("-inf")  # the first step prints: the run is alive
        self._first_step = state.global_step
        self._eval_at_start = self.eval_seconds()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and isinstance(logs.get("loss"), (int, float)):
            self.loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        # the last step is printed once, by on_train_end, with the loss logged after this call
        last = state.max_steps > 0 and state.global_step >= state.max_steps
        if state.is_world_process_zero and now - self._last >= self.interval and not last:
            self._emit(state, now)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.global_step > self._first_step:
            self._emit(state, time.perf_counter())

    def _emit(self, state, now: float) -> None:
        self._last = now
        elapsed = now - self._start
        steps = state.global_step - self._first_step
        busy = elapsed - (self.eval_seconds() - self._eval_at_start)
        rate = steps / busy if steps > 0 and busy > 0 else None
        self.write(progress_line(state.global_step, state.max_steps, self.loss, rate, elapsed))
