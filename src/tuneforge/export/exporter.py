"""`tuneforge export`: a trained run as a merged transformers checkpoint, ONNX, int8, ONNX-int8 or GGUF (chat
runs; export/gguf.py), each with an export.json saying what it costs (parity with the trained model on the run's
test split) and gains (size, CPU latency and throughput)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from tuneforge.errors import ConfigError, ModelError
from tuneforge.inference.exports import (
    EXPORT_INFO,
    INT8_WEIGHTS,
    ONNX_FILE,
    int8_weight_only_state,
    load_export,
    quantize_int8,
    save_int8_state,
)

log = logging.getLogger("tuneforge")
FORMATS = ("merged", "onnx", "int8", "onnx-int8", "gguf")
#: the least next-token agreement with the trained model a GGUF export must reach (read back by transformers), per
#: type: rounding every weight to 16 bits or to 8-bit blocks moves near-tied choices (measured in docs/gguf.md)
GGUF_MIN_AGREEMENT = {"f32": 0.999, "f16": 0.98, "bf16": 0.95, "q8_0": 0.95}


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _export_onnx(model, exports, processor, path: Path, outputs: list[tuple[str, int]] | None = None) -> None:
    """torch.onnx (dynamo exporter, onnxscript) with the task's inputs and dynamic axes (`exports.onnx_inputs`:
    token ids with dynamic batch and sequence, or pixel values with a dynamic batch); the task's extra forward
    arguments (causal LMs: no KV cache, so one pass returns the logits of every position); `outputs` the task's
    output names and widths (`exports.onnx_outputs`): the logits split into them. `exports`: the task's
    ExportHooks."""
    outputs = outputs or [("logits", -1)]
    widths = [w for _, w in outputs]
    names, args, shapes = exports.onnx_inputs(processor)
    forward_kwargs = exports.onnx_forward_kwargs

    class LogitsOnly(torch.nn.Module):
        """The model with positional inputs in `names` order and its logits (split per head) as outputs."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *inputs):
            logits = self.m(**dict(zip(names, inputs)), **forward_kwargs).logits
            return logits if len(widths) == 1 else tuple(torch.split(logits, widths, dim=-1))

    try:
        prog = torch.onnx.export(
            LogitsOnly(model.eval()),
            args,
            input_names=names,
            output_names=[n for n, _ in outputs],
            dynamic_shapes=(shapes,),
            dynamo=True,
            optimize=True,
            verbose=False,
        )
        prog.save(str(path))
    except Exception as exc:
        text = str(exc).strip()
        # torch.export's own message puts the cause under "## Exception summary"
        lines = [l for l in text.split("## Exception summary", 1)[-1].splitlines() if l.strip()] or [type(exc).__name__]
        raise ModelError(f"ONNX export failed: {lines[0][:300]}") from None


def _test_inputs(run_dir: Path, meta: dict, processor, max_samples: int) -> tuple[list, str]:
    """Rows of the run's test split (its validation split when it has none), exactly the rows training held out:
    read back from RUN/data/split/ through the task's `held_out` (runs written before the split was saved
    re-create it from config.yaml), as the task's `exports.held_out_rows`."""
    from tuneforge.config import load_config
    from tuneforge.registry import TASKS

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ModelError(f"{run_dir} has no config.yaml: the test split cannot be re-created")
    cfg = load_config(cfg_path, environment=False)  # a finished run: export needs no GPU of its config
    task_cls = TASKS.get(meta["task"])
    split, name = task_cls(cfg).held_out(run_dir, processor)
    if split is None or len(split) == 0:
        raise ModelError("the run has neither a test nor a validation split to check the export on")
    return task_cls.exports.held_out_rows(split, min(max_samples, len(split))), name


@torch.no_grad()
def _logits(model, exports, processor, rows: list[dict], batch_size: int) -> list[np.ndarray]:
    """Per-row outputs (`exports.output_rows`): [outputs] for a sequence-level head, [positions, vocab] of the real
    tokens for a LM."""
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        batch = exports.batch(chunk, processor)
        out.extend(exports.output_rows(model(**batch).logits.float().cpu().numpy(), batch, chunk))
    return out


@torch.no_grad()
def _bench(model, exports, processor, rows: list[dict], n_single: int = 40, n_batches: int = 4) -> dict:
    import time

    def run(chunk):
        model(**exports.batch(chunk, processor))

    torch.set_num_threads(max(1, torch.get_num_threads()))
    singles = [rows[i % len(rows)] for i in range(n_single)]
    run(singles[:1])  # warm-up (allocations, ONNX graph init)
    times = []
    for r in singles:
        t0 = time.perf_counter()
        run([r])
        times.append(time.perf_counter() - t0)
    big = [rows[i % len(rows)] for i in range(32 * n_batches)]
    t0 = time.perf_counter()
    for i in range(0, len(big), 32):
        run(big[i : i + 32])
    elapsed = time.perf_counter() - t0
    return {
        "latency_ms_p50_batch1": float(np.percentile(times, 50) * 1000),
        "latency_ms_p95_batch1": float(np.percentile(times, 95) * 1000),
        "throughput_rows_per_s_batch32": float(len(big) / elapsed),
    }


def _check_gguf_parity(parity: dict, quant: str) -> None:
    """ModelError (the export is not kept) when the GGUF read back picks the trained model's next token too rarely."""
    need, got = GGUF_MIN_AGREEMENT[quant], parity.get("next_token_agreement")
    if got is not None and got < need:
        raise ModelError(
            f"GGUF {quant} parity check failed: next-token agreement with the trained model {got:.3f} < {need} "
            f"(largest logit difference {parity.get('max_abs_logit_diff', float('nan')):.3g}); try --quant f16 or f32"
        )


def export_run(
    run_dir: str | Path,
    fmt: str,
    out_dir: str | Path,
    overwrite: bool = False,
    max_samples: int = 2000,
    bench: bool = True,
    quant: str | None = None,
) -> dict:
    """Export a trained run and measure the export against the trained model.

    Args:
        run_dir: the run directory (config.yaml re-creates its test split).
        fmt: merged, onnx, int8 or onnx-int8 (the task's `exports.formats` say which apply).
        out_dir: new (or empty, or with `overwrite`) output directory.
        overwrite: replace an existing out_dir.
        max_samples: most test-split rows for the parity check (and the benchmark inputs).
        bench: measure CPU latency (batch 1, p50/p95) and throughput (batch 32) of both models (not for GGUF: its
            runtime is llama.cpp).
        quant: the GGUF type (f16 by default; export/gguf.QUANTS); only for fmt gguf.
    Returns the report also written to out_dir/export.json.
    Raises ConfigError for an unknown format or a format the task cannot use; ModelError when the run cannot
    be merged, exported or checked; MethodError when the run's method cannot be merged."""
    from tuneforge.export.merge import merge_run
    from tuneforge.inference import load_run, model_dir_of
    from tuneforge.models.loader import METADATA_FILE, read_run_metadata

    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown export format '{fmt}'; available: {', '.join(FORMATS)}")
    model_dir = model_dir_of(run_dir)
    meta = read_run_metadata(model_dir)
    from tuneforge.registry import TASKS

    task_cls = TASKS.get(meta["task"])
    exports = task_cls.exports
    if fmt not in exports.formats:
        what = {"onnx-int8": "is for classifiers, not for", "gguf": "is for chat models (llama.cpp, Ollama), not for"}
        raise ConfigError(
            f"--format {fmt} {what.get(fmt, 'does not apply to')} this run's task '{meta['task']}' (use "
            f"{', '.join(exports.formats)})"
        )
    if fmt == "gguf":
        from tuneforge.export.gguf import check_quant, converter_dir

        quant = quant or "f16"
        check_quant(quant)
        converter_dir()  # missing converter: one line before anything is merged
    elif quant is not None:
        raise ConfigError("--quant applies to --format gguf only")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ModelError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    run_root = model_dir.parent if model_dir.name == "model" else model_dir

    # every format starts from the merged plain checkpoint (checked against the trained model by merge_run)
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    merge = merge_run(model_dir, staging / "merged", overwrite=True)
    work = staging / "out"
    work.mkdir(parents=True)
    try:
        merged_dir = staging / "merged"
        auto = task_cls.auto_class()
        int8_scheme = exports.int8_scheme
        gguf_report = None
        if fmt == "merged":
            for f in merged_dir.iterdir():
                shutil.move(str(f), work / f.name)
        elif fmt == "gguf":
            from tuneforge.export.gguf import write_export

            tok = task_cls.inference.load_processor(str(merged_dir))
            tok.save_pretrained(str(work))  # the tokenizer beside the file, for transformers (the GGUF holds its own)
            gguf_report = write_export(merged_dir, work, quant, meta, tok)
            bench = False  # transformers' speed on a dequantized GGUF says nothing about llama.cpp's
        else:
            model = auto.from_pretrained(str(merged_dir)).eval()
            tok = task_cls.inference.load_processor(str(merged_dir))
            tok.save_pretrained(str(work))
            model.config.save_pretrained(str(work))
            if fmt == "int8":
                state = (
                    int8_weight_only_state(model) if int8_scheme == "weight-only" else quantize_int8(model).state_dict()
                )
                save_int8_state(state, work / INT8_WEIGHTS, int8_scheme)  # safetensors: no pickle
            else:
                _export_onnx(model, exports, tok, work / ONNX_FILE, exports.onnx_outputs(meta))
                if fmt == "onnx-int8":
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    fp32 = staging / "fp32.onnx"
                    shutil.move(str(work / ONNX_FILE), fp32)
                    data = fp32.with_name(fp32.name + ".data")
                    if (work / (ONNX_FILE + ".data")).exists():
                        shutil.move(str(work / (ONNX_FILE + ".data")), data)
                    quantize_dynamic(str(fp32), str(work / ONNX_FILE), weight_type=QuantType.QInt8)
        shutil.copy(model_dir / METADATA_FILE, work / METADATA_FILE)
        report = {
            "format": fmt,
            "source_run": str(run_root.resolve()),
            "task": meta["task"],
            "method": meta["method"],
            "base_model": meta.get("base_model"),
            "merge_check_max_abs_logit_diff": merge["max_abs_logit_diff"],
        }
        if fmt == "int8":
            report["int8_scheme"] = int8_scheme
        if gguf_report is not None:
            report["gguf"] = gguf_report
        (work / EXPORT_INFO).write_text(json.dumps(report, indent=2))

        # measure: the trained (unmerged) model vs the export, on the same tokenized test rows
        ref = load_run(model_dir, device="cpu", precision="fp32")
        exp = load_export(work, device="cpu", logits_only=True)
        rows, split = _test_inputs(run_root, meta, ref.tokenizer, max_samples)
        proc, bs = ref.tokenizer, exports.parity_batch_size
        report["parity"] = exports.parity(
            _logits(ref.model, exports, proc, rows, bs), _logits(exp.model, exports, proc, rows, bs), rows, split, meta
        )
        if gguf_report is not None:
            _check_gguf_parity(report["parity"], quant)
        report["size_bytes"] = dir_size(work)
        report["reference_size_bytes"] = dir_size(merged_dir) if fmt != "merged" else report["size_bytes"]
        if bench:
            # the reference for speed is the merged fp32 model: the adapter's extra matmuls are not what an
            # export is compared against, its fp32 weights are
            base = auto.from_pretrained(str(merged_dir if fmt != "merged" else work)).eval()
            report["speed"] = {
                "reference": _bench(base, exports, proc, rows),
                "export": _bench(exp.model, exports, proc, rows),
            }
            r, e = report["speed"]["reference"], report["speed"]["export"]
            report["speed"]["speedup_batch1_p50"] = r["latency_ms_p50_batch1"] / e["latency_ms_p50_batch1"]
            report["speed"]["speedup_batch32_throughput"] = (
                e["throughput_rows_per_s_batch32"] / r["throughput_rows_per_s_batch32"]
            )
            report["speed"]["threads"] = torch.get_num_threads()
        (work / EXPORT_INFO).write_text(json.dumps(report, indent=2))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work), str(out))
    shutil.rmtree(staging, ignore_errors=True)
    return report
