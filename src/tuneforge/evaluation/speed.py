"""Inference speed of a trained model and the size of its artefacts: the cost side of a method comparison.

Measured on rows the task already tokenized (the test split, else validation), through the task's own
collator, so it works for every task without knowing its record format. For causal LMs this is the cost of
one forward pass over the prompt and answer (scoring), not of generating text token by token."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from tuneforge.errors import first_line

log = logging.getLogger("tuneforge")

#: examples timed one at a time (latency) and in batches (throughput); bounded so the measurement
#: stays a few seconds on a CPU even for a 100M+ parameter model
LATENCY_SAMPLES = 64
THROUGHPUT_SAMPLES = 256
WARMUP = 2


def peak_rss_bytes() -> int:
    """The peak resident memory of this process in bytes: /proc/self/status VmHWM on Linux. Not `ru_maxrss`: a
    process started by another (compare's runs, the web UI's, a benchmark's measuring child) inherits its parent's
    high-water mark there when the parent was the larger (the kernel keeps the old address space's peak across
    exec), so a fresh run started from a 3 GiB parent reported a 2.6 GiB peak for 1.4 GiB of its own."""
    import resource

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # elsewhere (macOS: bytes; other systems: KiB), with the inheritance caveat above
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if os.uname().sysname == "Darwin" else rss * 1024


def dir_size_mb(path: str | Path) -> float | None:
    """Total size of the files under `path` in MiB (None when it does not exist)."""
    p = Path(path)
    if not p.exists():
        return None
    total = 0
    for root, _dirs, files in os.walk(p):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:  # a file removed while walking is simply not counted
                pass
    return round(total / 2**20, 3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_inference(
    model,
    dataset,
    collate,
    batch_size: int = 32,
    latency_samples: int = LATENCY_SAMPLES,
    throughput_samples: int = THROUGHPUT_SAMPLES,
) -> dict:
    """Batch-1 latency (p50/p95 over up to `latency_samples` rows) and batched throughput of `model`.

    Args:
        model: the trained model (a PEFT wrapper or plain transformers model).
        dataset: tokenized rows (dicts with input_ids, ...), as the task prepared them; labels are dropped.
        collate: the task's collator, which pads a list of rows into a batch.
        batch_size: rows per batch for the throughput measurement.
        latency_samples / throughput_samples: how many rows each measurement uses at most.

    Returns {} when there is no data, else inference_latency_ms_p50/p95, inference_samples_per_second,
    inference_batch_size and inference_samples. Raises nothing of its own; errors of the model propagate."""
    if dataset is None or len(dataset) == 0:
        return {}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_lat = min(latency_samples, len(dataset))
    n_thr = min(throughput_samples, len(dataset))
    rows = [dataset[i] for i in range(max(n_lat, n_thr))]

    def forward(batch_rows):
        batch = collate(batch_rows)
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels" and hasattr(v, "to")}
        model(**batch)

    try:
        for r in rows[:WARMUP]:  # first calls pay for lazy initialisation, not inference
            forward([r])
        _sync(device)
        times = []
        for r in rows[:n_lat]:
            t0 = time.perf_counter()
            forward([r])
            _sync(device)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s in range(0, n_thr, batch_size):
            forward(rows[s : s + batch_size])
        _sync(device)
        batched = time.perf_counter() - t0
    finally:
        if was_training:
            model.train()
    ms = np.asarray(times) * 1000.0
    return {
        "inference_latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
        "inference_latency_ms_p95": round(float(np.percentile(ms, 95)), 3),
        "inference_samples_per_second": round(n_thr / batched, 2) if batched > 0 else None,
        "inference_batch_size": batch_size,
        "inference_samples": n_lat,
    }


def inference_report(model, dataset, collate, batch_size: int = 32) -> dict:
    """`measure_inference`, but a failure only warns: a training run must not fail over a benchmark.

    Args: as for measure_inference. Returns its dict, or {} after a warning."""
    try:
        return measure_inference(model, dataset, collate, batch_size)
    except Exception as exc:
        log.warning("inference speed not measured: %s", first_line(exc, with_type=True))
        return {}
