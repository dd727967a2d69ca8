"""Loading what `tuneforge export` wrote, as a LoadedRun, so predict / chat / serve take exports like runs."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from tuneforge.errors import ModelError

EXPORT_INFO = "export.json"
INT8_WEIGHTS = "model_int8.pt"
ONNX_FILE = "model.onnx"


def is_export(path: str | Path) -> bool:
    return (Path(path) / EXPORT_INFO).is_file()


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the nn.Linear layers (int8 weights, one scale per output channel;
    activations quantized per batch): the `dynamic` int8 scheme, used for classifiers. The output projection
    stays fp32. torch.ao's dynamic quantization is deprecated but still the one CPU int8 path without extra
    packages. Causal LMs use `int8_weight_only_state` instead: per-batch activation scales cannot hold their
    activation outliers (63% of SmolLM2-135M's next-token choices changed)."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    spec = {name: per_channel_dynamic_qconfig for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m is not head}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _quantized_linears(model: nn.Module) -> list[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]


def int8_weight_only_state(model: nn.Module) -> dict:
    """The model's state dict with every nn.Linear weight (but the output head, often tied to the input
    embeddings) as int8 with one fp32 scale per output row: `<name>.weight` becomes `<name>.weight_int8` and
    `<name>.weight_scale`. Symmetric round-to-nearest; the dequantized weight is within scale/2 of the original."""
    state = model.state_dict()
    for name in _quantized_linears(model):
        w = state.pop(f"{name}.weight").float()
        scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
        state[f"{name}.weight_int8"] = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
        state[f"{name}.weight_scale"] = scale
    return state


def load_int8_weight_only(model: nn.Module, state: dict) -> nn.Module:
    """Load what `int8_weight_only_state` saved into `model` (fp32 weights dequantized from int8)."""
    state = dict(state)
    for name in _quantized_linears(model):
        q, scale = state.pop(f"{name}.weight_int8", None), state.pop(f"{name}.weight_scale", None)
        if q is None or scale is None:
            raise RuntimeError(f"the int8 weights have no entry for layer '{name}'")
        state[f"{name}.weight"] = q.float() * scale
    model.load_state_dict(state)
    return model


class OnnxModel(nn.Module):
    """An onnxruntime session behind the slice of a transformers model's interface inference uses:
    `model(**encodings).logits`, `.eval()`, `.to()`, `next(model.parameters()).device`."""

    def __init__(self, path: str | Path):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        # an empty parameter: callers find the (CPU) device through model.parameters()
        self._anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, **enc):
        feed = {k: np.asarray(v.cpu() if torch.is_tensor(v) else v, dtype=np.int64)
                for k, v in enc.items() if k in self.input_names}
        missing = [n for n in self.input_names if n not in feed]
        for n in missing:  # token_type_ids when the tokenizer did not produce them
            feed[n] = np.zeros_like(feed["input_ids"])
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, feed)[0]))


def load_export(path: str | Path, device: str | None = None, logits_only: bool = False):
    """Load an exported directory (merged, int8, onnx, onnx-int8) as a LoadedRun.

    Args:
        path: the directory `tuneforge export` wrote.
        device: torch device for merged exports (int8 and ONNX run on CPU).
        logits_only: the caller only needs `model(**enc).logits` (parity checks), so ONNX causal LMs load too.
    Raises ModelError when the directory is incomplete or its format cannot be loaded this way."""
    import transformers

    from tuneforge.inference import LoadedRun
    from tuneforge.models.loader import load_tokenizer, read_run_metadata
    from tuneforge.tasks import TASKS

    p = Path(path)
    info = json.loads((p / EXPORT_INFO).read_text())
    fmt = info.get("format")
    meta = read_run_metadata(p)
    auto = getattr(transformers, TASKS.get(meta["task"]).auto_class_name)
    tok = load_tokenizer(str(p))
    try:
        if fmt == "merged":
            model = auto.from_pretrained(str(p)).to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        elif fmt == "int8":
            config = transformers.AutoConfig.from_pretrained(str(p))
            state = torch.load(p / INT8_WEIGHTS, weights_only=False)
            if info.get("int8_scheme", "dynamic") == "weight-only":
                model = load_int8_weight_only(auto.from_config(config).eval(), state)
            else:
                model = quantize_int8(auto.from_config(config).eval())
                model.load_state_dict(state)
        elif fmt in ("onnx", "onnx-int8"):
            if meta["task"] != "classification" and not logits_only:
                raise ModelError(f"{path} is an ONNX export of a '{meta['task']}' model: run it with onnxruntime, "
                                 f"or export --format merged / int8 for `tuneforge chat` and `serve`")
            model = OnnxModel(p / ONNX_FILE)
        else:
            raise ModelError(f"{path}: unknown export format '{fmt}'")
    except (OSError, FileNotFoundError, RuntimeError) as exc:
        raise ModelError(f"could not load the {fmt} export in {path}: {str(exc).splitlines()[0][:200]}") from None
    model.eval()
    return LoadedRun(model=model, tokenizer=tok, meta=meta, model_dir=p)
