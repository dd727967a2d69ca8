"""N LoRA adapters of one base model in one server process (`tuneforge serve RUN_1 ... RUN_N`) against N separate
server processes (`tuneforge serve RUN_i` each): total memory and request latency, for N = 1, 2, 4.

Trains N tiny LoRA classification runs of the builtin MiniLM (a few steps each: the adapters' quality does not
matter here, only their size), starts the servers as real `tuneforge serve` processes on loopback, warms them up,
then sends sequential /v1/classify requests (one text each, cycling through the runs: in one process each request
names its run in the `model` field; with separate servers each goes to its run's server). Memory is measured after
the requests: RSS (counts the shared library pages once per process) and PSS (shares them out: the honest total).

    python benchmarks/serve_adapters.py [--sizes 1,2,4] [--requests 60] [--steps 4] [--work DIR]

Runnable in a few minutes on 2 CPUs (the runs are kept in --work and reused)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "A gripping, beautifully acted film.",
    "Dull, predictable and far too long.",
    "The plot wanders but the performances carry it.",
    "I laughed, I cried, I would watch it again.",
    "An overlong mess with no sense of pacing.",
    "Charming and sincere, if slight.",
]


def train_runs(work: Path, n: int, steps: int) -> list[str]:
    """n LoRA runs of builtin:minilm-l6 on a few rotten-tomatoes rows (reused when already trained)."""
    import tuneforge
    from tuneforge.config.validation import validate_config

    runs = []
    for i in range(n):
        out = work / f"lora-{i + 1}"
        if not (out / "model" / "tuneforge.json").is_file():
            raw = {
                "model": {"name": "builtin:minilm-l6"},
                "data": {"train": "builtin:rotten-tomatoes", "max_train_samples": 64, "max_length": 64},
                "task": {"type": "classification"},
                "method": {"name": "lora", "r": 8},
                "train": {
                    "max_steps": steps,
                    "batch_size": 16,
                    "learning_rate": 1e-3,
                    "seed": i,
                    "report_to": "none",
                    "logging_steps": 50,
                },
                "eval": {"load_best_model": False},
                "output": {"dir": str(out)},
            }
            tuneforge.train(validate_config(raw), force=True)
        runs.append(str(out))
    return runs


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(targets: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "serve", *targets, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"server at {url} did not start within {timeout:.0f} s")


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """Total RSS and PSS (MiB) of the processes."""
    import psutil

    rss = pss = 0
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20


def measure(servers: list[tuple[subprocess.Popen, str]], routes: list[tuple[str, str | None]], requests: int) -> dict:
    """routes: per run, (server URL, model name or None); requests cycle through them."""
    import httpx

    with httpx.Client(timeout=120) as c:

        def one(i: int) -> float:
            url, model = routes[i % len(routes)]
            body = {"text": TEXTS[i % len(TEXTS)], **({"model": model} if model else {})}
            t0 = time.perf_counter()
            r = c.post(url + "/v1/classify", json=body)
            if r.status_code != 200:
                raise SystemExit(f"request failed: {r.status_code} {r.text[:300]}")
            return time.perf_counter() - t0

        for i in range(2 * len(routes)):  # warm-up: every run answers twice
            one(i)
        times = sorted(one(i) for i in range(requests))
    rss, pss = memory_mb([p.pid for p, _ in servers])
    return {
        "rss": rss,
        "pss": pss,
        "p50": statistics.median(times) * 1000,
        "p95": times[int(0.95 * (len(times) - 1))] * 1000,
    }


def stop(servers) -> None:
    for p, _ in servers:
        p.terminate()
    for p, _ in servers:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def run_one(targets: list[str], requests: int) -> dict:
    """All targets in one `tuneforge serve` process."""
    servers = [start(targets)]
    try:
        wait_ready(*servers[0])
        names = [Path(t).name for t in targets]
        routes = [(servers[0][1], n if len(targets) > 1 else None) for n in names]
        return measure(servers, routes, requests)
    finally:
        stop(servers)


def run_separate(targets: list[str], requests: int) -> dict:
    """One `tuneforge serve` process per target (started together)."""
    servers = [start([t]) for t in targets]
    try:
        for s in servers:
            wait_ready(*s)
        return measure(servers, [(url, None) for _, url in servers], requests)
    finally:
        stop(servers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,2,4", help="numbers of adapters, comma-separated")
    ap.add_argument("--requests", type=int, default=60, help="timed requests per configuration")
    ap.add_argument("--steps", type=int, default=4, help="training steps per LoRA run")
    ap.add_argument("--work", default="/tmp/tuneforge-bench-adapters", help="where the runs are kept")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runs = train_runs(work, max(sizes), args.steps)
    print(f"trained/reused {len(runs)} LoRA runs of builtin:minilm-l6 in {time.time() - t0:.0f} s", flush=True)

    rows = []
    for n in sizes:
        one = run_one(runs[:n], args.requests)
        sep = run_separate(runs[:n], args.requests)
        rows.append((n, one, sep))
        print(
            f"N={n}: one process {one['pss']:.0f} MiB PSS, p50 {one['p50']:.1f} ms; "
            f"{n} processes {sep['pss']:.0f} MiB PSS, p50 {sep['p50']:.1f} ms",
            flush=True,
        )

    print()
    print(
        f"builtin:minilm-l6 + LoRA r=8 adapters, CPU ({os.cpu_count()} cores), {args.requests} sequential "
        f"/v1/classify requests of one text, cycling through the runs"
    )
    print()
    print(
        "| N | one process: RSS MiB | PSS MiB | p50 ms | p95 ms | N processes: RSS MiB | PSS MiB | p50 ms | p95 ms "
        "| PSS N procs / one | p50 one / N procs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, one, sep in rows:
        print(
            f"| {n} | {one['rss']:.0f} | {one['pss']:.0f} | {one['p50']:.1f} | {one['p95']:.1f} | "
            f"{sep['rss']:.0f} | {sep['pss']:.0f} | {sep['p50']:.1f} | {sep['p95']:.1f} | "
            f"{sep['pss'] / one['pss']:.2f}x | {one['p50'] / sep['p50']:.2f}x |"
        )
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
