"""How close `tuneforge estimate` comes to measured peaks, and the table of estimates in docs/scale-out.md.

1. CPU, measured here: a few training steps (float32, AdamW fused, plain forward/backward/step loop as the
   engine's Trainer runs it) of builtin:minilm-l6 full and LoRA, batch 32 x 128, in a fresh subprocess, against the
   estimate for device "cpu" without the weights (loaded before the baseline is taken). Three measurements:
   - live tensors: the peak of bytes held by torch's CPU allocator (torch.profiler with profile_memory=True, every
     allocation and free summed in order), over the bytes live after loading. What the estimate models: the CPU
     counterpart of the GPU figures' torch.cuda.max_memory_allocated.
   - RSS: peak RSS growth (VmHWM) in a process started with MALLOC_MMAP_THRESHOLD_=131072, which stops glibc
     from raising its mmap threshold to the size of each freed tensor (its default), so freed tensors go back to the
     OS instead of staying resident; less the file-backed pages (library code) first touched by the steps. What the
     process really needs; it also holds a little non-tensor memory (MKL/oneDNN buffers, about 0.1 GiB with full
     fine-tuning) that the estimate does not model.
   - RSS, glibc defaults: the raw peak RSS growth as before (for reference only): with glibc's dynamic mmap threshold
     a freed 6-24 MiB activation stays in the heap and later smaller ones fragment it, so this holds up to twice the
     live bytes; no peak-memory estimate can or should model that slack.
2. GPU, measured elsewhere: the reference H200 figures (Llama-3.2-1B shape, batch 8 x 2048, bf16, AdamW;
   benchmarks/gpu_train.py and /work/shared/bench/gpu_peer_baseline.py), against the formula for the same setup.
3. The table in docs/scale-out.md: estimated peak per GPU for Llama 1B/3B/8B/70B shapes x full/LoRA/QLoRA on 1 GPU
   and on 8 GPUs with FSDP (batch 8 x 2048, bf16, AdamW, gradient checkpointing on, chunked loss on, LoRA r=16 on all
   linear layers). Everything in it is an estimate.

    python benchmarks/estimate_accuracy.py            # all three tables (~1-2 min on 2 CPU cores)
    python benchmarks/estimate_accuracy.py --measure MODEL METHOD BATCH SEQ STEPS [plain]  # one measurement, JSON
                                                                   # (plain: without the profiler)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

GIB = 2**30
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def classification_config(model: str, method: str, batch: int, seq: int):
    from tuneforge.config import load_config

    m = {"name": method} if method == "full" else {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.05}
    return load_config(
        raw={
            "model": {"name": model},
            "task": {"type": "classification"},
            "data": {"train": "x.csv", "max_length": seq},
            "method": m,
            "train": {"batch_size": batch, "precision": "fp32"},  # what `measure` runs
        },
        environment=False,
    )


#: the glibc setting of the measuring subprocess: a fixed mmap threshold (no dynamic raise to each freed size)
HONEST_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _status() -> dict[str, int]:
    """VmRSS / RssAnon / RssFile of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _rss() -> int:
    return _status().get("VmRSS", 0)


def live_peak(events) -> int:
    """Peak of the running sum of the profiler's memory events (allocations positive, frees negative) in bytes."""
    cur = peak = 0
    for e in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns()):
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def measure(model: str, method: str, batch: int, seq: int, steps: int, profiled: bool = True) -> dict:
    """In this process: load as the engine does, then train `steps` steps (under the profiler if `profiled`).
    Bytes: `live_peak` (peak of live tensor bytes over those after loading; None unprofiled), `rss_growth` (peak RSS
    growth), `file_growth` (file-backed pages touched meanwhile), `rss_anon_growth` (the difference)."""
    import contextlib

    import torch
    from torch.profiler import ProfilerActivity, profile

    from tuneforge.evaluation.speed import peak_rss_bytes
    from tuneforge.methods import MethodContext
    from tuneforge.models.loader import load_model, resolve_model
    from tuneforge.registry import METHODS, TASKS

    torch.manual_seed(0)
    cfg = classification_config(model, method, batch, seq)
    task_cls = TASKS.get("classification")
    task = task_cls(cfg)
    meth = METHODS.get(cfg.method.name)(cfg.method)
    ctx = MethodContext(full_precision_modules=task_cls.full_precision_modules)
    net = load_model(resolve_model(model), task.auto_class(), "float32", num_labels=2)
    ctx.head_modules = task.head_modules(net)
    net = meth.apply(net, ctx)
    opt = torch.optim.AdamW(meth.param_groups(net, 1e-4, 0.01), lr=1e-4, fused=True)
    vocab = net.config.vocab_size
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch,), generator=g)
    net.train()
    before = _status()
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True) if profiled else None
    with prof or contextlib.nullcontext():
        for _ in range(steps):
            loss = net(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    peak = peak_rss_bytes()  # not ru_maxrss: it can hold the parent's peak (see peak_rss_bytes)
    after = _status()
    rss_growth = max(peak - before["VmRSS"], 0)
    file_growth = max(after["RssFile"] - before["RssFile"], 0)
    return {
        "model": model,
        "method": method,
        "batch": batch,
        "seq": seq,
        "steps": steps,
        "malloc": {k: os.environ.get(k) for k in HONEST_MALLOC},
        "live_peak": live_peak(prof.profiler.kineto_results.events()) if prof else None,
        "rss_growth": rss_growth,
        "file_growth": file_growth,
        "rss_anon_growth": max(rss_growth - file_growth, 0),
        "rss_after_load": before["VmRSS"],
    }


def measure_in_subprocess(
    model: str, method: str, batch: int, seq: int, steps: int = 3, *, honest_malloc: bool = True, profiled: bool = True
) -> dict:
    """`measure` in a fresh process; `honest_malloc`: with HONEST_MALLOC (else glibc's defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false", **(HONEST_MALLOC if honest_malloc else {}))
    out = subprocess.run(
        [sys.executable, __file__, "--measure", model, method, str(batch), str(seq), str(steps)]
        + ([] if profiled else ["plain"]),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def estimated_growth(model: str, method: str, batch: int, seq: int) -> int:
    """The estimate for device cpu, less the weights (loaded before the measurement's baseline)."""
    from tuneforge.training.estimate import estimate_memory

    e = estimate_memory(classification_config(model, method, batch, seq), device="cpu")
    return e.total - e.weights


def reference_cases():
    """The reference GPU measurements (H200, Llama-3.2-1B shape, batch 8 x 2048) and the configs that model them:
    (label, config, measured GiB). `precision: fp32` with `model.dtype: bfloat16` is bf16 weights without autocast,
    as the benchmark's plain loop runs."""
    from tuneforge.config import load_config

    def cfg(method, **train):
        return load_config(
            raw={
                "model": {"name": "llama-1b", "dtype": "bfloat16"},
                "task": {"type": "causal_lm"},
                "data": {"train": "x.jsonl", "max_length": 2048},
                "method": method,
                "train": {"batch_size": 8, "precision": "fp32", "liger": False, **train},
            },
            environment=False,
        )

    lora = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": LORA_TARGETS}
    qlora = {**lora, "name": "qlora"}
    peer = {"fused_lora": False, "chunked_loss": False}
    return [
        ("peer LoRA r16, no GC, full logits", cfg(lora, **peer), 64.6),
        ("peer QLoRA NF4, GC, full logits", cfg(qlora, gradient_checkpointing=True, **peer), 27.3),
        ("tuneforge LoRA chunked+fused, GC on", cfg(lora, gradient_checkpointing=True), 22.4),
        ("tuneforge LoRA chunked+fused+liger, GC off", cfg(lora, liger=True), 22.4),
        ("tuneforge QLoRA chunked+fused, GC on", cfg(qlora, gradient_checkpointing=True), 20.4),
    ]


def readme_table() -> str:
    from tuneforge.config import load_config
    from tuneforge.training.estimate import estimate_memory

    methods = {
        "full": {"name": "full"},
        "LoRA": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "QLoRA": {"name": "qlora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
    }
    lines = [
        "estimated peak GiB per GPU (estimate, not measured): batch 8 x 2048, bf16, AdamW, gradient "
        "checkpointing on, chunked loss on, LoRA r=16 all-linear",
        f"{'model':<10}{'method':<8}{'1 GPU':>10}{'8 GPUs FSDP':>14}",
    ]
    for spec in ("llama-1b", "llama-3b", "llama-8b", "llama-70b"):
        for label, m in methods.items():
            c = load_config(
                raw={
                    "model": {"name": spec},
                    "task": {"type": "causal_lm"},
                    "data": {"train": "x.jsonl", "max_length": 2048},
                    "method": m,
                    "train": {"batch_size": 8, "gradient_checkpointing": True, "liger": False},
                },
                environment=False,
            )
            one = estimate_memory(c).total / GIB
            eight = estimate_memory(c, nproc=8, strategy="fsdp").total / GIB
            lines.append(f"{spec:<10}{label:<8}{one:>10.1f}{eight:>14.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--measure"]:
        model, method, batch, seq, steps = argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5])
        print(json.dumps(measure(model, method, batch, seq, steps, profiled=argv[6:7] != ["plain"])))
        return 0
    from tuneforge.training.estimate import estimate_memory

    mib = 2**20
    print("CPU, measured here: builtin:minilm-l6, batch 32 x 128, 3 steps, float32, AdamW; MiB over the loaded model;")
    print("estimate: device cpu less weights; live: peak live tensor bytes (torch.profiler); RSS: peak RSS growth with")
    print("MALLOC_MMAP_THRESHOLD_=131072 less library pages; RSS default: raw peak RSS growth, glibc defaults")
    print(f"{'case':<28}{'estimate':>9}{'live':>7}{'ratio':>7}{'RSS':>7}{'ratio':>7}{'RSS default':>13}{'ratio':>7}")
    for model, method in (("builtin:minilm-l6", "full"), ("builtin:minilm-l6", "lora")):
        r = measure_in_subprocess(model, method, 32, 128, 3)
        d = measure_in_subprocess(model, method, 32, 128, 3, honest_malloc=False, profiled=False)
        e = estimated_growth(model, method, 32, 128)
        live, rss, raw = r["live_peak"], r["rss_anon_growth"], d["rss_growth"]
        print(
            f"{model + ' ' + method:<28}{e / mib:>9.0f}{live / mib:>7.0f}{e / max(live, 1):>7.2f}"
            f"{rss / mib:>7.0f}{e / max(rss, 1):>7.2f}{raw / mib:>13.0f}{e / max(raw, 1):>7.2f}"
        )
    print()
    print("GPU, measured elsewhere (H200, torch.cuda.max_memory_allocated; Llama-3.2-1B shape, batch 8 x 2048)")
    print(f"{'case':<44}{'estimate GiB':>13}{'measured GiB':>13}{'ratio':>8}")
    for label, c, measured in reference_cases():
        e = estimate_memory(c).total / GIB
        print(f"{label:<44}{e:>13.1f}{measured:>13.1f}{e / measured:>8.2f}")
    print()
    print(readme_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
