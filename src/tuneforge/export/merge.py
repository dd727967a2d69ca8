"""Merging a trained run into a plain transformers checkpoint that loads with `AutoModelFor...` alone.

The merged model is checked against the run as trained (the unmerged adapted model, on a quantized base for
QLoRA) on a few inputs before anything is written: a merge that changes the outputs is refused, not saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tuneforge.errors import MethodError, ModelError
from tuneforge.methods import METHODS

MERGE_INFO = "tuneforge_merge.json"


@torch.no_grad()
def _logits(model, inputs: list[dict]) -> list[torch.Tensor]:
    # one example at a time: no padding, so causal LMs without a pad token are checked the same way
    device = next(model.parameters()).device
    return [model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu() for enc in inputs]


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def merge_run(
    run_dir: str | Path,
    out_dir: str | Path,
    texts: list[str] | None = None,
    overwrite: bool = False,
    tolerance: float | None = None,
) -> dict:
    """Merge the method of a trained run into its base and write a plain transformers checkpoint
    (safetensors weights, config with the label map, tokenizer with its chat template).

    Args:
        run_dir: a run directory (or its model/ directory).
        out_dir: where the merged checkpoint goes (must be new or empty unless `overwrite`).
        texts: inputs for the equivalence check of a text model (default: the task's own check inputs: a few
            fixed sentences, or a few fixed images for an image model).
        overwrite: replace an existing out_dir.
        tolerance: largest allowed absolute logit difference between the merged and the unmerged model
            (default 1e-3 for float32 weights, 5e-2 for 16-bit).
    Returns {"out_dir", "method", "max_abs_logit_diff", "tolerance", "inputs"}.
    Raises MethodError when the run's method cannot merge; ModelError when out_dir exists, the run is not
    loadable, or the merged model's outputs differ beyond the tolerance (then nothing is written)."""
    from tuneforge.inference import load_run, model_dir_of
    from tuneforge.models.loader import read_run_metadata
    from tuneforge.registry import TASKS

    model_dir = model_dir_of(run_dir)
    meta = read_run_metadata(model_dir)
    method_cls = METHODS.get(meta["method"])
    if not method_cls.can_merge:
        # ask the method for its own reason, before the (slow) load
        try:
            method_cls(method_cls.Config.model_validate(meta.get("method_config") or {})).merge(None)
        except MethodError:
            raise
        except Exception:
            pass
        raise MethodError(f"method '{meta['method']}' cannot be merged into the base model")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ModelError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    if out.resolve() == Path(model_dir).resolve() or Path(model_dir).resolve() in out.resolve().parents:
        raise ModelError("--out must be outside the run's model directory")

    run = load_run(model_dir, device="cpu", precision="fp32")
    method = method_cls(method_cls.Config.model_validate(meta.get("method_config") or {}))
    task_cls = TASKS.get(meta["task"])
    inputs = task_cls.exports.check_inputs(run.tokenizer, meta, texts)
    before = _logits(run.model, inputs)
    merged = method.merge(run.model)

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        run.tokenizer.save_pretrained(str(tmp))
        # the check loads what was written, with transformers alone, as a user of the checkpoint would
        reloaded = task_cls.auto_class().from_pretrained(str(tmp))
        reloaded.eval()
        after = _logits(reloaded, inputs)
        diff = max_abs_diff(before, after)
        wide = any(p.dtype in (torch.float16, torch.bfloat16) for p in reloaded.parameters())
        tol = tolerance if tolerance is not None else (5e-2 if wide else 1e-3)
        if not diff <= tol:
            raise ModelError(
                f"the merged model's logits differ from the trained model's by {diff:.3g} "
                f"(tolerance {tol:g}); nothing was written"
            )
        info = {
            "source_run": str(Path(model_dir).resolve().parent),
            "method": meta["method"],
            "task": meta["task"],
            "base_model": meta.get("base_model"),
            "labels": meta.get("labels"),
            # tokens the run (or the runs it continued) added to the vocabulary: a run starting from this merged
            # model trains their rows as new ones (models/vocabulary_setup.inherited)
            **({"vocabulary": meta["vocabulary"]} if meta.get("vocabulary") else {}),
            "max_abs_logit_diff": diff,
            "tolerance": tol,
            "check_inputs": len(inputs),
        }
        (tmp / MERGE_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {
        "out_dir": str(out),
        "method": meta["method"],
        "max_abs_logit_diff": diff,
        "tolerance": tol,
        "inputs": len(inputs),
    }
