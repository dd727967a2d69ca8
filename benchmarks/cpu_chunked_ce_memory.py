"""Peak memory of the causal-LM loss with and without the chunked linear + cross-entropy, on CPU.

A SmolLM-sized head (hidden 576, vocabulary 49152, tied weight that trains) on batch x sequence tokens, fp32.
Each variant runs in a fresh process and reports its peak RSS above the inputs (peak RSS (VmHWM) after - RSS
before), so the difference is what holding the logits (and their gradient) costs.

    python benchmarks/cpu_chunked_ce_memory.py [--tokens 4096]
"""

import argparse
import json
import subprocess
import sys


def child(variant: str, tokens: int, hidden: int, vocab: int) -> dict:
    import time

    import torch
    import torch.nn.functional as F

    from tuneforge.evaluation.speed import peak_rss_bytes
    from tuneforge.kernels.chunked_ce import linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(tokens, hidden, requires_grad=True)
    w = (torch.randn(vocab, hidden) * 0.02).requires_grad_()
    y = torch.randint(0, vocab, (tokens,))
    rss0 = int(open("/proc/self/statm").read().split()[1]) * 4096
    t0 = time.perf_counter()
    if variant == "reference":
        loss = F.cross_entropy(h @ w.t(), y)
    else:
        loss = linear_cross_entropy(h, w, y)
    loss.backward()
    secs = time.perf_counter() - t0
    peak = peak_rss_bytes()
    return {
        "variant": variant,
        "tokens": tokens,
        "loss": round(loss.item(), 5),
        "peak_above_inputs_MiB": round((peak - rss0) / 2**20, 1),
        "seconds": round(secs, 2),
        "logits_MiB": round(tokens * vocab * 4 / 2**20, 1),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.tokens, a.hidden, a.vocab)))
        sys.exit(0)
    for variant in ("reference", "chunked"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--tokens",
                str(a.tokens),
                "--hidden",
                str(a.hidden),
                "--vocab",
                str(a.vocab),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        print(out.stdout.strip())
