"""Bounded load test of `tuneforge serve` on loopback: N requests from C concurrent clients against
/v1/classify (or /v1/chat/completions with --chat); prints errors, p50/p95 latency and throughput.

    python benchmarks/serve_load.py RUN_OR_EXPORT_DIR [--requests 200] [--concurrency 20] [--chat]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TEXTS = [
    "A gripping, beautifully acted film.",
    "Dull, predictable and far too long.",
    "The plot wanders but the performances carry it.",
    "I laughed, I cried, I would watch it again.",
    "An overlong mess with no sense of pacing.",
    "Charming and sincere, if slight.",
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--chat", action="store_true", help="load /v1/chat/completions instead (max_tokens 16)")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    import httpx

    from serve_common import running_server
    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import load_backend

    backend = load_backend(args.target, device="cpu")
    rng = random.Random(0)
    with running_server(create_app(backend)) as url:
        client = httpx.Client(base_url=url, timeout=args.timeout, limits=httpx.Limits(max_connections=args.concurrency))

        def one(i: int):
            if args.chat:
                body, path = (
                    {"messages": [{"role": "user", "content": rng.choice(TEXTS)}], "max_tokens": 16, "temperature": 0},
                    "/v1/chat/completions",
                )
            else:
                body, path = {"text": TEXTS[i % len(TEXTS)]}, "/v1/classify"
            t0 = time.perf_counter()
            try:
                r = client.post(path, json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            return ok, time.perf_counter() - t0

        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - t0
        batches = client.get("/health").json()["batches"]
        client.close()
    lat = sorted(t for _, t in results)

    def pick(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    report = {
        "endpoint": "chat" if args.chat else "classify",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "errors": sum(not ok for ok, _ in results),
        "latency_ms_p50": round(pick(0.5), 1),
        "latency_ms_p95": round(pick(0.95), 1),
        "throughput_req_per_s": round(args.requests / wall, 1),
        "wall_s": round(wall, 2),
        "forward_passes": batches,
    }
    print(json.dumps(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
