"""tuneforge (speed levers on) against the peer stack (transformers + PEFT, as /work/shared/bench/
gpu_peer_baseline.py runs it) on the same GPU, in one run, on issue 8's shapes: a random Llama-3.2-1B-shaped
model, bf16, batch 8 x 2048, LoRA r=16 on all linear layers / full fine-tuning / QLoRA (NF4 + double quant).

For each method and gradient-checkpointing setting both stacks train from the same initial weights on the
same batch with the same AdamW (fused, lr, no weight decay). Printed per row: tokens/s (timed steps after
warmup, as the peer measures), peak GiB (torch.cuda.max_memory_allocated), MFU (the peer's FLOP formula
against 989 TFLOP/s), the loss at the first and the last step (numerics check: the levers must not change
what is learned), and tuneforge / peer ratios; the peer's best published figures are shown for the issue's
targets (LoRA >= 2x, QLoRA >= 3x, full >= 1.15x tokens/s).

The tuneforge side is what `tuneforge train` builds: the registered method's `apply` and
`training.speed.apply_speedups` with the run config's switches at `auto`; the loop itself is a plain
forward/backward/step, the same for both stacks, so Trainer bookkeeping is not part of the comparison.

`--seq-scan` adds the longest sequence that fits for LoRA (batch `--scan-batch`, gradient checkpointing
on): for each stack the length doubles from `--scan-start` until a step runs out of memory (or reaches
`--scan-max`); the row reports the last length that fit, with its tokens/s and peak memory.

A row that fails (any exception in one stack) records the error in that row and the run goes on with the
next; the exit status is then 1. Every row is appended to the results file as soon as it finishes
(`--out`, default $OUT/gpu_train.jsonl when $OUT is set), so a crash later loses nothing measured before.

    python benchmarks/gpu_train.py [lora full qlora] [--steps 50] [--gc both|on|off] [--peer-liger]
    python benchmarks/gpu_train.py lora --seq-scan [--scan-start 2048] [--scan-batch 1]
    python benchmarks/gpu_train.py --dry-run      # tiny shape on CPU: exercises the same code paths
Without CUDA (and no --dry-run) it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import gc as gc_module
import json
import os
import sys
import tempfile
import time

import torch

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: the peer's best H100 figures (gpu_peer_baseline.py header): tokens/s and peak GiB of that configuration
PEER_BEST = {"lora": (42_300, 36.3), "full": (64_200, 29.2), "qlora": (8_600, 20.3)}
TARGET = {"lora": 2.0, "full": 1.15, "qlora": 3.0}
H100_BF16_FLOPS = 989e12


def llama_config(tiny: bool):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=512,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        )
    return LlamaConfig(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )


class Bench:
    def __init__(self, tiny: bool):
        self.tiny = tiny
        self.cfg = llama_config(tiny)
        self.device = "cpu" if tiny else "cuda"
        self.dtype = torch.float32 if tiny else torch.bfloat16
        self.bs, self.seq = (2, 32) if tiny else (8, 2048)
        self._qdir = None

    # ---- models: identical initial weights for both stacks (same seed, same device for the init) ----------
    def dense(self):
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(self.cfg, attn_implementation="sdpa", dtype=self.dtype).to(self.device)

    def quant_dir(self):
        if self._qdir is None:
            self._qdir = tempfile.mkdtemp(prefix="tf-rand1b-")
            self.dense().save_pretrained(self._qdir)
        return self._qdir

    def quantized(self, quant_config):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            self.quant_dir(),
            quantization_config=quant_config,
            dtype=self.dtype,
            attn_implementation="sdpa",
            device_map={"": 0},
        )

    def n_params(self):
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            m = AutoModelForCausalLM.from_config(self.cfg)
        return sum(p.numel() for p in m.parameters())  # tied embeddings counted once, as the peer does

    # ---- the two stacks --------------------------------------------------------------------------------------
    def peer(self, method: str, gc: bool, liger: bool):
        """gpu_peer_baseline.py's setup, step for step."""
        if method == "qlora":
            from peft import prepare_model_for_kbit_training
            from transformers import BitsAndBytesConfig

            q = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
            model = prepare_model_for_kbit_training(self.quantized(q), use_gradient_checkpointing=True)
        else:
            model = self.dense()
        if liger:
            from liger_kernel.transformers import _apply_liger_kernel_to_instance

            _apply_liger_kernel_to_instance(model=model)
        if method in ("lora", "qlora"):
            from peft import LoraConfig, get_peft_model

            torch.manual_seed(1)
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
        if gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if method != "full":
                model.enable_input_require_grads()
        params = [p for p in model.parameters() if p.requires_grad]
        return model, params, "peer (transformers+PEFT" + (" +liger)" if liger else ")")

    def tuneforge(self, method: str, gc: bool):
        """What `tuneforge train` builds: the registered method, then the speed levers at their defaults."""
        from tuneforge.config.schema import TrainSection
        from tuneforge.methods import METHODS, MethodContext
        from tuneforge.tasks.causal_lm import CausalLMTask
        from tuneforge.training.speed import apply_speedups

        name = "full" if method == "full" else "lora"
        mcls = METHODS.get(name)
        extra = (
            {}
            if method == "full"
            else {
                "r": 16,
                "alpha": 32,
                "dropout": 0.0,
                "target_modules": LORA_TARGETS,
                "quantization": "nf4" if method == "qlora" else None,
            }
        )
        m = mcls(mcls.Config(name=name, **extra))
        ctx = MethodContext(full_precision_modules=CausalLMTask.full_precision_modules, gradient_checkpointing=gc)
        model = self.quantized(m.load_kwargs(ctx)["quantization_config"]) if method == "qlora" else self.dense()
        torch.manual_seed(1)  # LoRA A matrices: same draw as the peer's
        model = m.apply(model, ctx)
        # on CPU (dry run) `auto` would switch the levers off: ask for the two that run anywhere
        levers = {} if not self.tiny else {"chunked_loss": True, "fused_lora": True}
        on = apply_speedups(model, TrainSection(**levers), CausalLMTask.__new__(CausalLMTask), m)
        params = [p for _, p in m.trainable_parameters(model)]
        return model, params, "tuneforge (" + ",".join(lv.key for lv in on if lv.on) + ")"

    # ---- one measurement -------------------------------------------------------------------------------------
    def measure(
        self,
        stack: str,
        method: str,
        gc: bool,
        steps: int,
        warmup: int,
        timed: int,
        liger=False,
        bs: int | None = None,
        seq: int | None = None,
    ):
        bs, seq = bs or self.bs, seq or self.seq
        cuda = self.device == "cuda"
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model, params, label = self.peer(method, gc, liger) if stack == "peer" else self.tuneforge(method, gc)
        model.train()
        lr = 1e-4 if method == "full" else 1e-3
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=cuda or None)
        g = torch.Generator().manual_seed(2)
        x = torch.randint(0, self.cfg.vocab_size, (bs, seq), generator=g).to(self.device)
        row = {"stack": label, "method": method, "gc": gc, "batch": bs, "seq": seq}
        losses, seconds = [], None
        n = max(steps, warmup + timed)
        try:
            for i in range(n):
                if i == warmup:
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                loss = model(input_ids=x, labels=x).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.detach())
                if i == warmup + timed - 1:
                    if cuda:
                        torch.cuda.synchronize()
                    seconds = time.perf_counter() - t0
        except torch.OutOfMemoryError:
            return {**row, "oom": True}
        finally:
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            del model, opt, params
            losses_kept = [v.item() for v in losses[:1] + losses[-1:]] if losses else []
            del losses
            release(cuda)
        tps = bs * seq * timed / seconds
        n_params = self.n_params()
        flops = (6 if method == "full" else 4) * n_params + 6 * self.cfg.num_hidden_layers * self.cfg.hidden_size * seq
        return {
            **row,
            "tokens_per_s": round(tps),
            "peak_GiB": None if peak is None else round(peak, 2),
            "mfu": round(tps * flops / H100_BF16_FLOPS, 3) if cuda else None,
            "loss_first": round(losses_kept[0], 5),
            "loss_last": round(losses_kept[-1], 5),
            "steps": n,
        }

    def seq_scan(self, stack: str, start: int, limit: int, bs: int, liger=False) -> dict:
        """Longest LoRA sequence (doubling from `start`, at most `limit`) for which two training steps fit."""
        seq, fit, tried, oom_at = start, None, [], None
        while seq <= limit:
            r = self.measure(stack, "lora", True, 2, 1, 1, liger=liger, bs=bs, seq=seq)
            tried.append(seq)
            if r.get("oom"):
                oom_at = seq
                break
            fit = r
            seq *= 2
        row = {
            "stack": (fit or {}).get("stack", stack),
            "method": "lora",
            "scan": "seq",
            "gc": True,
            "batch": bs,
            "seq_tried": tried,
            "max_seq": None if fit is None else fit["seq"],
            "oom_at": oom_at,
        }
        if fit is not None:
            row.update({"tokens_per_s": fit["tokens_per_s"], "peak_GiB": fit["peak_GiB"]})
        return row


def release(cuda: bool) -> None:
    """Free what a finished (or failed) row held before the next one is built."""
    gc_module.collect()
    if cuda:
        torch.cuda.empty_cache()


def compare(rows: list[dict]) -> list[dict]:
    """tuneforge / peer ratios per (method, gc), and the loss difference after the same steps."""
    out = []
    for r in rows:
        if not r["stack"].startswith("tuneforge") or r.get("oom") or r.get("error") or r.get("scan"):
            continue
        p = next(
            (
                q
                for q in rows
                if q["stack"].startswith("peer")
                and q["method"] == r["method"]
                and q["gc"] == r["gc"]
                and not q.get("oom")
                and not q.get("error")
                and not q.get("scan")
            ),
            None,
        )
        best_tps, best_gib = PEER_BEST[r["method"]]
        c = {
            "method": r["method"],
            "gc": r["gc"],
            "loss_abs_diff": None if p is None else round(abs(r["loss_last"] - p["loss_last"]), 5),
            "tps_vs_peer_here": None if p is None else round(r["tokens_per_s"] / p["tokens_per_s"], 3),
            "mem_vs_peer_here": None if p is None or p["peak_GiB"] is None else round(r["peak_GiB"] / p["peak_GiB"], 3),
        }
        if r["peak_GiB"] is not None:
            c.update(
                {
                    "tps_vs_peer_best": round(r["tokens_per_s"] / best_tps, 3),
                    "mem_vs_peer_best": round(r["peak_GiB"] / best_gib, 3),
                    "target_tps_x": TARGET[r["method"]],
                }
            )
        out.append(c)
    return out


def table(rows: list[dict]) -> str:
    cols = ["stack", "method", "gc", "tokens_per_s", "peak_GiB", "mfu", "loss_first", "loss_last"]
    lines = [" | ".join(cols)]
    for r in rows:
        if r.get("scan"):
            continue
        flag = "ERROR" if r.get("error") else "OOM" if r.get("oom") else None
        lines.append(" | ".join(flag if flag and c not in ("stack", "method", "gc") else str(r.get(c)) for c in cols))
    scans = [r for r in rows if r.get("scan")]
    if scans:
        lines.append(
            "longest LoRA sequence that fits (batch {}, gc on): ".format(scans[0]["batch"])
            + "; ".join(f"{r['stack']}: {'ERROR' if r.get('error') else r.get('max_seq')}" for r in scans)
        )
    return "\n".join(lines)


def run_row(rows: list[dict], out_path: str | None, fallback: dict, fn, *args, **kwargs) -> dict:
    """One row: `fn(*args, **kwargs)`, or `fallback` with the error when it raises; printed, kept, and
    appended to `out_path` at once."""
    try:
        row = fn(*args, **kwargs)
    except Exception as exc:
        row = {**fallback, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    if "error" in row:  # freed here, once the traceback (and the frames holding the model) is gone
        release(torch.cuda.is_available())
    rows.append(row)
    print(json.dumps(row), flush=True)
    if out_path:
        with open(out_path, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("methods", nargs="*", default=None, choices=["lora", "full", "qlora", []])
    ap.add_argument("--steps", type=int, default=50, help="training steps per row (loss compared at the last)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timed", type=int, default=8, help="steps timed after warmup")
    ap.add_argument("--gc", choices=["both", "on", "off"], default="both", help="gradient checkpointing")
    ap.add_argument("--peer-liger", action="store_true", help="also run the peer with liger-kernel")
    ap.add_argument("--dry-run", action="store_true", help="tiny shape on CPU (no GPU needed)")
    ap.add_argument(
        "--seq-scan",
        action="store_true",
        help="also find the longest LoRA sequence that fits, per stack (doubling until OOM)",
    )
    ap.add_argument("--scan-start", type=int, default=None, help="first length of the scan (default 2048)")
    ap.add_argument("--scan-max", type=int, default=None, help="stop doubling here (default 262144)")
    ap.add_argument("--scan-batch", type=int, default=1)
    ap.add_argument(
        "--out",
        default=None,
        help="results file, one JSON row per line, appended as rows finish "
        "(default $OUT/gpu_train.jsonl when $OUT is set)",
    )
    a = ap.parse_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        print("gpu_train.py: needs a CUDA GPU (none found); `--dry-run` runs a tiny CPU check of the same code")
        return 0
    methods = a.methods or (["lora", "full"] if a.dry_run else ["lora", "full", "qlora"])
    out_path = a.out or (os.path.join(os.environ["OUT"], "gpu_train.jsonl") if os.environ.get("OUT") else None)
    bench = Bench(tiny=a.dry_run)
    print(
        torch.__version__,
        torch.cuda.get_device_name(0) if torch.cuda.is_available() and not a.dry_run else "cpu (dry run)",
        flush=True,
    )
    rows: list[dict] = []
    for method in methods:
        gcs = {"both": (True, False), "on": (True,), "off": (False,)}[a.gc]
        for gc in gcs if method != "qlora" else (True,):
            stacks = [("peer", False)] + ([("peer", True)] if a.peer_liger else []) + [("tuneforge", False)]
            for stack, liger in stacks:
                fallback = {
                    "stack": stack + (" +liger" if liger else ""),
                    "method": method,
                    "gc": gc,
                    "batch": bench.bs,
                    "seq": bench.seq,
                }
                run_row(
                    rows, out_path, fallback, bench.measure, stack, method, gc, a.steps, a.warmup, a.timed, liger=liger
                )
    if a.seq_scan:
        start = a.scan_start or (16 if a.dry_run else 2048)
        limit = a.scan_max or (64 if a.dry_run else 262144)
        bench.cfg.max_position_embeddings = max(bench.cfg.max_position_embeddings, limit)
        for stack in ("peer", "tuneforge"):
            fallback = {"stack": stack, "method": "lora", "scan": "seq", "gc": True, "batch": a.scan_batch}
            run_row(rows, out_path, fallback, bench.seq_scan, stack, start, limit, a.scan_batch)
    print(table(rows))
    for c in compare(rows):
        print(json.dumps(c))
        if out_path:
            with open(out_path, "a") as f:
                f.write(json.dumps(c) + "\n")
    failed = [r for r in rows if r.get("error")]
    if failed:
        print(
            f"gpu_train.py: {len(failed)} row(s) failed: "
            + "; ".join(f"{r['stack']} {r['method']}: {r['error']}" for r in failed),
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
