"""Loading what `tuneforge export` wrote, as a LoadedRun, so predict / chat / serve take exports like runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from tuneforge.errors import ModelError, first_line

EXPORT_INFO = "export.json"
# safetensors: int8 weights with their scales beside them, no pickle, so opening an export cannot run code
INT8_WEIGHTS = "model_int8.safetensors"
# what tuneforge wrote before (torch.save, a pickle): read only through torch.load(weights_only=True)
LEGACY_INT8_WEIGHTS = "model_int8.pt"
ONNX_FILE = "model.onnx"
_PACKED = "_packed_params._packed_params"  # where a dynamic-int8 nn.Linear keeps its (qint8 weight, bias)


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
    spec = {
        name: per_channel_dynamic_qconfig
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m is not head
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _quantized_linears(model: nn.Module) -> list[str]:
    """The layers weight-only int8 stores as int8: every nn.Linear but the output head, and every nn.Conv2d (a
    convolutional network's weights are almost all convolutions)."""
    try:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    except NotImplementedError:  # models without token embeddings (image models)
        head = None
    return [
        name
        for name, m in model.named_modules()
        if (isinstance(m, nn.Linear) and m is not head) or isinstance(m, nn.Conv2d)
    ]


def int8_weight_only_state(model: nn.Module) -> dict:
    """The model's state dict with every nn.Linear weight (but the output head, often tied to the input
    embeddings) and every nn.Conv2d weight as int8 with one fp32 scale per output row (channel):
    `<name>.weight` becomes `<name>.weight_int8` and `<name>.weight_scale`.
    Symmetric round-to-nearest; the dequantized weight is within scale/2 of the original."""
    state = model.state_dict()
    for name in _quantized_linears(model):
        w = state.pop(f"{name}.weight").float()
        # one scale per output row (channel): over every other axis of a convolution's kernel
        scale = (w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True) / 127.0).clamp(
            min=torch.finfo(torch.float32).tiny
        )
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


def load_int8_dynamic(model: nn.Module, state: dict) -> nn.Module:
    """Load a `quantize_int8` state dict (as `read_int8_state` returns it) into a `quantize_int8` model. The
    module versions torch's quantized layers read while loading come from the model itself, since a state read
    from safetensors carries none."""
    from collections import OrderedDict

    sd = OrderedDict(state)
    sd._metadata = getattr(model.state_dict(), "_metadata", OrderedDict())  # type: ignore[attr-defined]
    model.load_state_dict(sd)
    return model


def save_int8_state(state: dict, path: str | Path, scheme: str) -> None:
    """Write an int8 state dict (`int8_weight_only_state`, or the state dict of a `quantize_int8` model) as
    safetensors. A dynamic-int8 linear layer's packed (qint8 weight, bias) becomes `<layer>.weight_int8` (int8),
    `<layer>.weight_scale` and `<layer>.weight_zero_point` (one per output channel) and `<layer>.bias`; tensors
    that share memory (tied embeddings) are written once, their other names recorded in the file's metadata."""
    from safetensors.torch import save_file

    flat, packed = {}, {}
    for key, value in state.items():
        if key.endswith("_packed_params.dtype"):
            if value != torch.qint8:
                raise ModelError(f"int8 export: layer {key} is {value}, not qint8")
            continue
        if key.endswith(_PACKED):
            prefix = key[: -len(_PACKED)]
            weight, bias = value
            if (
                weight.qscheme() not in (torch.per_channel_affine, torch.per_channel_symmetric)
                or weight.q_per_channel_axis() != 0
            ):
                raise ModelError(f"int8 export: layer {prefix[:-1]} is not quantized per output channel")
            flat[prefix + "weight_int8"] = weight.int_repr()
            flat[prefix + "weight_scale"] = weight.q_per_channel_scales()
            flat[prefix + "weight_zero_point"] = weight.q_per_channel_zero_points()
            if bias is not None:
                flat[prefix + "bias"] = bias.detach()
            packed[prefix] = bias is not None
            continue
        if not torch.is_tensor(value):
            raise ModelError(f"int8 export: state entry {key} is a {type(value).__name__}, not a tensor")
        flat[key] = value.detach()
    tensors, aliases, seen = {}, {}, {}
    for key, t in flat.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = t
    # safetensors refuses tensors that share memory; only exact duplicates are aliased above, other views copied
    storages: set = set()
    for key, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        tensors[key] = t.contiguous().clone() if ptr in storages else t.contiguous()
        storages.add(ptr)
    save_file(
        tensors,
        str(path),
        metadata={
            "format": "pt",
            "tuneforge.int8_scheme": scheme,
            "tuneforge.packed": json.dumps(packed),
            "tuneforge.aliases": json.dumps(aliases),
        },
    )


def read_int8_state(directory: str | Path) -> dict:
    """The int8 state dict of an export directory, in the form `save_int8_state` was given: from
    model_int8.safetensors, or from an older export's model_int8.pt through torch.load(weights_only=True), which
    refuses pickled objects other than tensors.
    Raises ModelError when the weights are missing or cannot be read safely (then the message says to re-export)."""
    from safetensors import SafetensorError, safe_open

    d = Path(directory)
    path = d / INT8_WEIGHTS
    if not path.is_file():
        legacy = d / LEGACY_INT8_WEIGHTS
        if not legacy.is_file():
            raise ModelError(f"{d} has no {INT8_WEIGHTS}: the int8 export is incomplete")
        try:
            state = torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as exc:
            # torch's own message goes on to suggest weights_only=False: only the reason is worth repeating
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = f" (it refers to {found.group(1)})" if found else ""
            raise ModelError(
                f"{legacy} is a pickle holding more than tensors{what}, and loading it could run "
                f"code: not loaded; re-export the run with `tuneforge export RUN --format int8`"
            ) from None
        if not isinstance(state, dict):
            raise ModelError(
                f"{legacy} is not an int8 state dict; re-export the run with `tuneforge export RUN --format int8`"
            )
        return state
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        packed = json.loads(meta.get("tuneforge.packed", "{}"))
        aliases = json.loads(meta.get("tuneforge.aliases", "{}"))
        for alias, source in aliases.items():
            state[alias] = state[source]
        for prefix, has_bias in packed.items():
            q = state.pop(prefix + "weight_int8")
            scale, zero = state.pop(prefix + "weight_scale"), state.pop(prefix + "weight_zero_point")
            bias = state.pop(prefix + "bias") if has_bias else None
            weight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero.long(), 0)
            state[prefix + _PACKED] = (weight, bias)
            state[prefix + "_packed_params.dtype"] = torch.qint8
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelError(
            f"{path} is not a readable tuneforge int8 file ({first_line(exc, with_type=True)}); re-export the run"
        ) from None
    return state


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
        # token ids are int64 in the graph, pixel values float32
        types = {i.name: (np.float32 if "float" in i.type else np.int64) for i in self.session.get_inputs()}
        feed = {
            k: np.asarray(v.cpu() if torch.is_tensor(v) else v, dtype=types[k])
            for k, v in enc.items()
            if k in self.input_names
        }
        missing = [n for n in self.input_names if n not in feed]
        for n in missing:  # token_type_ids when the tokenizer did not produce them
            feed[n] = np.zeros_like(feed["input_ids"])
        outs = self.session.run(None, feed)
        # a graph with one output per head (a multi-task model): side by side again, as the model returned them
        logits = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=-1)
        return SimpleNamespace(logits=torch.from_numpy(logits))


def load_export(path: str | Path, device: str | None = None, logits_only: bool = False):
    """Load an exported directory (merged, int8, onnx, onnx-int8, gguf) as a LoadedRun.

    Args:
        path: the directory `tuneforge export` wrote.
        device: torch device for merged exports (int8 and ONNX run on CPU).
        logits_only: the caller only needs `model(**enc).logits` (parity checks), so ONNX exports the task cannot
            use in predict/serve (`Task.exports.onnx_usable`) load too.
    Raises ModelError when the directory is incomplete or its format cannot be loaded this way."""
    import transformers

    from tuneforge.inference import LoadedRun
    from tuneforge.models.loader import read_run_metadata
    from tuneforge.registry import TASKS

    p = Path(path)
    info = json.loads((p / EXPORT_INFO).read_text())
    fmt = info.get("format")
    meta = read_run_metadata(p)
    task_cls = TASKS.get(meta["task"])
    auto = task_cls.auto_class()
    tok = task_cls.inference.load_processor(str(p))
    try:
        if fmt == "merged":
            model = auto.from_pretrained(str(p)).to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        elif fmt == "gguf":  # transformers' own GGUF reader: dequantized to float32 (parity, chat with transformers)
            file = (info.get("gguf") or {}).get("file")
            if not file or not (p / file).is_file():
                raise ModelError(f"{path}: the GGUF export has no GGUF file ({file})")
            model = auto.from_pretrained(str(p), gguf_file=file, dtype=torch.float32)
            model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        elif fmt == "int8":
            config = transformers.AutoConfig.from_pretrained(str(p))
            state = read_int8_state(p)
            if info.get("int8_scheme", "dynamic") == "weight-only":
                model = load_int8_weight_only(auto.from_config(config).eval(), state)
            else:
                model = load_int8_dynamic(quantize_int8(auto.from_config(config).eval()), state)
        elif fmt in ("onnx", "onnx-int8"):
            if not task_cls.exports.onnx_usable and not logits_only:
                raise ModelError(
                    f"{path} is an ONNX export of a '{meta['task']}' model: run it with onnxruntime, "
                    f"or export --format merged / int8 for `tuneforge chat` and `serve`"
                )
            model = OnnxModel(p / ONNX_FILE)
        else:
            raise ModelError(f"{path}: unknown export format '{fmt}'")
    except (OSError, FileNotFoundError, RuntimeError) as exc:
        raise ModelError(f"could not load the {fmt} export in {path}: {first_line(exc)}") from None
    model.eval()
    return LoadedRun(model=model, tokenizer=tok, meta=meta, model_dir=p)
