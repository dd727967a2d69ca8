"""One thread owns the model: every request becomes a job on its queue, so concurrent clients never run two
forward passes on the same weights at once, and classification requests that arrive together are answered
by one batched forward pass. With several runs on one server (one base model, an adapter per run), a batch only
ever holds requests for one run: its backend switches that run's adapter on and computes, and no other job runs
in between."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _ClassifyJob:
    texts: list[str]
    fn: Callable[[list[str]], list] | None = None
    future: Future = field(default_factory=Future)


@dataclass
class _CallJob:
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


class ModelWorker:
    """Runs jobs one after another on a single daemon thread.

    Args:
        classify_fn: texts -> one result per text (classification backends), the default of `classify`; None for
            chat backends.
        max_batch: most texts in one batched classification pass.
        gather_s: how long the worker waits for more classification requests once one has arrived (seconds);
            a little latency buys much larger batches under load."""

    def __init__(
        self, classify_fn: Callable[[list[str]], list] | None = None, max_batch: int = 64, gather_s: float = 0.005
    ):
        self.classify_fn = classify_fn
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.batches = 0  # forward passes run, for tests and /health
        self._thread = threading.Thread(target=self._loop, name="tuneforge-model", daemon=True)
        self._thread.start()

    def classify(self, texts: list[str], fn: Callable[[list[str]], list] | None = None) -> Future:
        """Classify `texts` with `fn` (default: `classify_fn`), batched with other requests for the same `fn`."""
        job = _ClassifyJob(list(texts), fn or self.classify_fn)
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
            # requests for the same model that were set aside while an earlier batch gathered join this one
            kept = []
            for other in pending:
                if self._joins(other, job, size):
                    batch.append(other)
                    size += len(other.texts)
                else:
                    kept.append(other)
            pending = kept
            # gather whatever else is waiting (briefly), keeping other job kinds in arrival order; requests for
            # another model wait for the next batch (the gathering stops once a batch's worth waits)
            waiting = sum(len(j.texts) for j in pending if isinstance(j, _ClassifyJob))
            while size < self.max_batch and waiting < self.max_batch:
                try:
                    nxt = self._q.get(timeout=self.gather_s)
                except queue.Empty:
                    break
                if self._joins(nxt, job, size):
                    batch.append(nxt)
                    size += len(nxt.texts)
                elif isinstance(nxt, _ClassifyJob) and nxt.fn != job.fn:
                    pending.append(nxt)
                    waiting += len(nxt.texts)
                else:
                    pending.append(nxt)
                    break
            self._run_batch(batch)

    def _joins(self, other, first: _ClassifyJob, size: int) -> bool:
        """Whether job `other` can join the batch that `first` opened (now `size` texts): a classification for
        the same model that fits."""
        return isinstance(other, _ClassifyJob) and other.fn == first.fn and size + len(other.texts) <= self.max_batch

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
            results = batch[0].fn(texts)
            self.batches += 1
        except BaseException as exc:
            for job in batch:
                job.future.set_exception(exc)
            return
        i = 0
        for job in batch:
            job.future.set_result(results[i : i + len(job.texts)])
            i += len(job.texts)
