"""The run's model on the `meta` device (no memory, no weights), with the run's method applied: what the estimate
counts parameters, dtypes and blocks on.

The model's shapes come from its config.json (or a hard-coded Llama shape for the spec names `llama-1b`, `llama-3b`,
`llama-8b`, `llama-70b`). A skeleton of the task's model class is built on `meta` and the run's method is applied to
it through the method contract (`load_kwargs`, `apply`, `trainable_parameters`, `speed_levers`,
`adapter_module_names`), so the trainable parameters are what the method really makes trainable. A 4-bit or 8-bit
base (`load_kwargs` returns a bitsandbytes config) cannot be built on `meta`; the skeleton is marked as loaded in
k-bit so the method's preparation runs as on a real quantized model (PEFT's prepare_model_for_kbit_training upcasts
the remaining 16-bit parameters to float32, which then also makes the residual stream float32), and the bytes of the
quantized linear weights are counted from the quantization config: NF4/FP4 0.5 byte + one fp32 absmax per 64 values
(double quant: one byte per 64 plus an fp32 per 256 blocks: 0.516 byte/param), int8 1 byte + an fp32 per row.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError, TuneforgeError, first_line

#: bitsandbytes 4-bit block size (values per absmax) and double-quantization block (absmaxes per second-level scale)
NF4_BLOCK, NF4_DQ_BLOCK = 64, 256

#: Llama spec names accepted as `model.name` by the estimator only (shapes of Llama 3.2 1B / 3B, 3.1 8B / 70B)
LLAMA_SPECS: dict[str, dict[str, Any]] = {
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    "llama-3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
    "llama-70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
}


@dataclass
class Skeleton:
    """What the estimator learned from the meta skeleton with the method applied (cached per model x method)."""

    model: Any
    hf_config: Any
    weight_bytes: int
    trainable_bytes: int
    trainable_params: int
    total_params: int
    #: sizes of trainable tensors (for the 8-bit optimizer's small-tensor rule)
    trainable_sizes: list[int]
    trainable_dtype_bytes: int
    stream_bytes: int
    fused_adapters: bool
    chunked_loss: bool
    notes: list[str]
    #: ids of the modules inside the method's adapters (`Method.adapter_module_names`), submodules included
    adapter_parts: frozenset[int] = frozenset()


_CACHE: dict[tuple, Skeleton] = {}


def _hf_config(cfg: RunConfig):
    name = cfg.model.name
    if name in LLAMA_SPECS:
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5, **LLAMA_SPECS[name])
    from transformers import AutoConfig

    from tuneforge.models.loader import resolve_model

    path = resolve_model(name, cfg.model.revision)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"model.name: cannot read the config of '{name}': {first_line(exc)}") from None


def torch_dtype(name: str, device: str, bf16: bool):
    """The torch dtype of `model.dtype` `name` as loaded on `device` (`auto`: 16-bit on a GPU, bf16 where it computes
    in bf16; float32 on CPU)."""
    import torch

    if name == "auto":
        return (torch.bfloat16 if bf16 else torch.float16) if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _quant_config(load_kwargs: dict) -> dict:
    """{'bits': 4|8, 'double_quant': bool, 'skip': [...]} from a method's `load_kwargs`, or {}."""
    q = load_kwargs.get("quantization_config")
    if q is None:
        return {}
    get = (lambda k, d=None: q.get(k, d)) if isinstance(q, dict) else (lambda k, d=None: getattr(q, k, d))
    if get("load_in_4bit", False):
        return {
            "bits": 4,
            "double_quant": bool(get("bnb_4bit_use_double_quant", False)),
            "skip": list(get("llm_int8_skip_modules") or []),
        }
    if get("load_in_8bit", False):
        return {"bits": 8, "double_quant": False, "skip": list(get("llm_int8_skip_modules") or [])}
    return {}


def nf4_bytes_per_param(double_quant: bool = True) -> float:
    """Bytes per weight of a bitsandbytes 4-bit tensor, quantization constants included."""
    if double_quant:
        return 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_DQ_BLOCK)
    return 0.5 + 4 / NF4_BLOCK


def discover(cfg: RunConfig, device: str, bf16: bool) -> Skeleton:
    """The run's skeleton on `device` ("cuda" or "cpu"; `bf16`: whether a GPU computes in bf16), built once per
    model, method and the settings that change it."""
    key = (
        cfg.model.name,
        cfg.model.revision,
        json.dumps(cfg.model.keep_layers),
        cfg.model.dtype,
        cfg.task.type,
        json.dumps(cfg.method.model_dump(mode="json"), sort_keys=True),
        device,
        bf16,
        str(cfg.train.fused_lora),
        str(cfg.train.chunked_loss),
    )
    if key in _CACHE:
        return _CACHE[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = _discover_quietly(cfg, device, bf16)
    if len(_CACHE) > 16:
        _CACHE.clear()
    _CACHE[key] = found
    return found


def _discover_quietly(cfg: RunConfig, device: str, bf16: bool) -> Skeleton:
    import torch

    from tuneforge.kernels.levers import wanted
    from tuneforge.methods import MethodContext
    from tuneforge.registry import METHODS, TASKS

    notes: list[str] = []
    task_cls = TASKS.get(cfg.task.type)
    method = METHODS.get(cfg.method.name)(cfg.method)
    hf = _hf_config(cfg)
    dtype = torch_dtype(cfg.model.dtype, device, bf16)
    ctx = MethodContext(
        full_precision_modules=task_cls.full_precision_modules, gradient_checkpointing=cfg.train.gradient_checkpointing
    )
    quant = _quant_config(method.load_kwargs(ctx))
    auto = task_cls.auto_class()
    with torch.device("meta"):
        try:
            model = auto.from_config(hf, dtype=dtype)
        except Exception as exc:
            from transformers import AutoModel

            model = AutoModel.from_config(hf, dtype=dtype)
            notes.append(
                f"the task's model class could not be built on meta ({type(exc).__name__}); "
                f"estimated on the backbone without its head"
            )
    if cfg.model.keep_layers is not None:
        from tuneforge.models.shrink import keep_layers

        keep_layers(model, cfg.model.keep_layers)
    task = task_cls.__new__(task_cls)  # the hooks used here need no prepared data
    task.cfg, task.force = cfg, False

    # the linear weights bitsandbytes would quantize: every Linear except the skipped modules and the output layer
    quantized: dict[int, tuple[int, int]] = {}
    if quant:
        out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        for name, mod in model.named_modules():
            if (
                isinstance(mod, torch.nn.Linear)
                and mod is not out_emb
                and not any(s == part for s in quant["skip"] for part in name.split("."))
            ):
                quantized[id(mod.weight)] = (mod.weight.numel(), mod.out_features)
        flag = "is_loaded_in_4bit" if quant["bits"] == 4 else "is_loaded_in_8bit"
        try:
            setattr(model, flag, True)  # the method prepares the skeleton as it would a quantized model
        except Exception:
            notes.append("could not mark the skeleton as quantized: 16-bit parameters counted as loaded")

    applied = True
    with torch.device("meta"):
        try:
            ctx.head_modules = task.head_modules(model)
            model = method.apply(model, ctx)
            trainable = method.trainable_parameters(model)
        except Exception as exc:
            applied = False
            trainable = [(n, p) for n, p in model.named_parameters()]
            notes.append(
                f"method '{cfg.method.name}' could not be applied to a meta skeleton "
                f"({first_line(exc, 80, with_type=True)}); "
                f"assumed every parameter trains (an upper bound)"
            )
    cuda = device == "cuda"
    fused = chunked = False
    adapter_parts: frozenset[int] = frozenset()
    if applied:
        try:
            levers = method.speed_levers(model, cfg.train, cuda)
            fused = any(lv.on for lv in levers if lv.key == "fused_lora")
        except TuneforgeError:
            raise
        except Exception:
            fused = False
        adapter_parts = frozenset(
            id(x) for name in method.adapter_module_names(model) for x in model.get_submodule(name).modules()
        )
    on, _ = wanted(cfg.train.chunked_loss, "chunked_loss", cuda or cfg.train.chunked_loss is True, "")
    if on:
        try:
            chunked = task.use_fused_loss(model) is None
        except Exception:
            chunked = False

    seen: set[int] = set()
    weight_bytes = total_params = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in quantized and not p.requires_grad:
            n, rows = quantized[id(p)]
            total_params += n
            weight_bytes += int(n * nf4_bytes_per_param(quant["double_quant"])) if quant["bits"] == 4 else n + 4 * rows
        else:
            total_params += p.numel()
            weight_bytes += p.numel() * p.element_size()
    uniq = {id(p): p for _, p in trainable}
    tsizes = [p.numel() for p in uniq.values()]
    tbytes = sum(p.numel() * p.element_size() for p in uniq.values())
    tdt = max((p.element_size() for p in uniq.values()), default=4)
    try:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except NotImplementedError:  # an image model: no token embeddings
        emb = None
    stream = (
        emb.weight.element_size()
        if emb is not None and getattr(emb, "weight", None) is not None
        else torch.empty((), dtype=dtype).element_size()
    )
    if quant:
        notes.append(
            f"{quant['bits']}-bit base: {len(quantized)} linear layers quantized "
            f"({nf4_bytes_per_param(quant['double_quant']):.3f} byte/param)"
            if quant["bits"] == 4
            else f"8-bit base: {len(quantized)} linear layers quantized"
        )
    return Skeleton(
        model,
        hf,
        weight_bytes,
        tbytes,
        sum(tsizes),
        total_params,
        tsizes,
        tdt,
        stream,
        fused,
        chunked,
        notes,
        adapter_parts,
    )
