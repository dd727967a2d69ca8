"""One thread owns the model: every request becomes a job on its queue, so concurrent clients never run two
forward passes on the same weights at once, and classification requests that arrive together are answered
by one batched forward pass."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class _ClassifyJob:
    texts: list[str]
    future: Future = field(default_factory=Future)


@dataclass
class _CallJob:
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


class ModelWorker:
    """Runs jobs one after another on a single daemon thread.

    Args:
        classify_fn: texts -> one result per text (classification backends); None for chat backends.
        max_batch: most texts in one batched classification pass.
        gather_s: how long the worker waits for more classification requests once one has arrived (seconds);
            a little latency buys much larger batches under load."""

    def __init__(self, classify_fn: Callable[[list[str]], list] | None = None, max_batch: int = 64,
                 gather_s: float = 0.005):
        self.classify_fn = classify_fn
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.batches = 0          # forward passes run, for tests and /health
        self._thread = threading.Thread(target=self._loop, name="tuneforge-model", daemon=True)
        self._thread.start()

    def classify(self, texts: list[str]) -> Future:
        job = _ClassifyJob(list(texts))
        self._q.put(job)
        return job.future

    def call(self, fn: Callable[[], Any]) -> Future:
        job = _CallJob(fn)
        self._q.put(job)
        return job.future

    def close(self) -> None:
        self._stop.set()
        self._q.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        pending: list = []
        while not self._stop.is_set():
            job = pending.pop(0) if pending else self._q.get()
            if job is None:
                return
            if isinstance(job, _CallJob):
                self._run(job.future, job.fn)
                continue
            batch, size = [job], len(job.texts)
            # gather whatever else is waiting (briefly), keeping other job kinds in arrival order
            while size < self.max_batch:
                try:
                    nxt = self._q.get(timeout=self.gather_s)
                except queue.Empty:
                    break
                if isinstance(nxt, _ClassifyJob) and size + len(nxt.texts) <= self.max_batch:
                    batch.append(nxt)
                    size += len(nxt.texts)
                else:
                    pending.append(nxt)
                    break
            self._run_batch(batch)

    def _run(self, future: Future, fn: Callable[[], Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the waiting request, which turns it into an HTTP error
            future.set_exception(exc)

    def _run_batch(self, batch: list[_ClassifyJob]) -> None:
        texts = [t for job in batch for t in job.texts]
        try:
            results = self.classify_fn(texts)
            self.batches += 1
        except BaseException as exc:
            for job in batch:
                job.future.set_exception(exc)
            return
        i = 0
        for job in batch:
            job.future.set_result(results[i:i + len(job.texts)])
            i += len(job.texts)
