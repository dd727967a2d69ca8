"""Per-device peak training memory, before a run starts: `tuneforge estimate`, the engine's start-of-run lines and
its one-line out-of-memory error.

How it works. The model's shapes come from its config.json (or a hard-coded Llama shape for the spec names
`llama-1b`, `llama-3b`, `llama-8b`, `llama-70b`). A skeleton of the task's model class is built on the `meta` device
(no memory, no weights) and the run's method is applied to it through the method contract (`load_kwargs`, `apply`,
`trainable_parameters`, `speed_levers`), so the trainable parameters are what the method really makes trainable.
A 4-bit or 8-bit base (`load_kwargs` returns a bitsandbytes config) cannot be built on `meta`; the skeleton is
marked as loaded in k-bit so the method's preparation runs as on a real quantized model (PEFT's
prepare_model_for_kbit_training upcasts the remaining 16-bit parameters to float32, which then also makes the
residual stream float32), and the bytes of the quantized linear weights are counted from the quantization config.

Peak = weights + gradients + optimizer states + activations + loss head + overhead, per device:

  weights      every parameter at its dtype; NF4/FP4: 0.5 byte + one fp32 absmax per 64 values (double quant:
               one byte per 64 plus an fp32 per 256 blocks: 0.516 byte/param), int8: 1 byte + an fp32 per row
  gradients    trainable parameters at their dtype
  optimizer    AdamW: two states at the parameter's dtype; 8-bit (bitsandbytes): 2 bytes/param (+1.6%),
               tensors under 4096 values stay 32-bit; paged: counted in full (it can spill to CPU)
  activations  what autograd keeps for backward, per transformer block and token (see `_block_bytes`);
               with gradient checkpointing only each block's input plus one block recomputed in backward.
               Dropout keeps a bool mask on a GPU but, on CPU, a noise tensor of the input's dtype (4 bytes in
               fp32): per attention probability, per hidden value and per adapted layer's input (LoRA dropout)
  logits       the loss: full logits cost 12 bytes x vocabulary per token at the start of backward (fp32 copy,
               log-softmax output and its gradient); the chunked loss (`train.chunked_loss`) one chunk of rows
  overhead     CUDA context and workspaces (0.4 GiB), autocast's 16-bit copies of fp32 trainable weights,
               FSDP/ZeRO-3's gathered block

Sharding (`strategy`, with `nproc` devices): ddp keeps everything (+ a gradient bucket copy), deepspeed-zero2
divides gradients and optimizer states, fsdp / deepspeed-zero3 also the weights (+ two gathered blocks);
activations are never divided (each device runs its own batch).

Accuracy against measurements is in benchmarks/estimate_accuracy.py and tests/test_estimate.py.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, TuneforgeError, first_line
from tuneforge.registry import closest

GIB = 2**30
STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
#: CUDA context, cuBLAS/cuDNN workspaces and allocator slack that `max_memory_allocated` does not show
CUDA_OVERHEAD = int(0.4 * GIB)
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


# ---- the result ---------------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """Per-device bytes at the peak of a training step."""

    weights: int
    trainable_weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    total: int
    trainable_params: int
    total_params: int
    nproc: int
    strategy: str
    assumptions: list[str] = field(default_factory=list)

    def table(self) -> str:
        """An aligned text table in GiB with a header."""
        rows = [
            ("weights", self.weights),
            ("  of which trainable", self.trainable_weights),
            ("gradients", self.gradients),
            ("optimizer states", self.optimizer),
            ("activations", self.activations),
            ("logits / loss", self.logits),
            ("overhead", self.overhead),
        ]
        where = f"per device, {self.nproc} x {self.strategy}" if self.nproc > 1 else "one device"
        head = f"estimated peak memory ({where})"
        width = max(len(r[0]) for r in rows) + 2
        lines = [head, f"{'component':<{width}}{'GiB':>9}", "-" * (width + 9)]
        lines += [f"{name:<{width}}{b / GIB:>9.2f}" for name, b in rows]
        lines += [
            "-" * (width + 9),
            f"{'total':<{width}}{self.total / GIB:>9.2f}",
            f"parameters: {self.trainable_params:,} trainable of {self.total_params:,}",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "weights",
                "trainable_weights",
                "gradients",
                "optimizer",
                "activations",
                "logits",
                "overhead",
                "total",
                "trainable_params",
                "total_params",
                "nproc",
                "strategy",
                "assumptions",
            )
        }


# ---- parsing helpers --------------------------------------------------------------------------------------------
_UNITS = {
    "": None,
    "b": 1,
    "k": 2**10,
    "kb": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mb": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gb": 2**30,
    "gib": 2**30,
    "t": 2**40,
    "tb": 2**40,
    "tib": 2**40,
}


def parse_memory(text: str) -> int:
    """'24GiB', '24GB', '80G', '512MiB', '1.5TiB' -> bytes. GPU memory is quoted in binary units, so GB and G mean
    GiB here. ConfigError for anything else (a number needs a unit)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS or _UNITS[unit] is None:
        raise ConfigError(f"--memory: '{text}' is not a size; give a number with a unit, e.g. 24GiB, 80G or 512MiB")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"--memory: '{text}' must be more than 0")
    return value


def gpu_memory(name: str) -> int:
    """Total memory of a catalogued GPU in bytes (h100-80gb, h200, a100-40gb, a100-80gb, 4090, 3090, l4, t4, a10g,
    v100-32gb, ...). ConfigError naming the closest for an unknown name."""
    from tuneforge.training.gpus import find_gpu

    return find_gpu(name).bytes


def _check_strategy(strategy: str, nproc: int) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"--strategy: unknown strategy '{strategy}'{closest(strategy, STRATEGIES)}; one of: {', '.join(STRATEGIES)}"
        )
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc: must be a positive number of devices, got {nproc}")


# ---- model discovery on the meta device --------------------------------------------------------------------------
@dataclass
class _Model:
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


_CACHE: dict[tuple, _Model] = {}


def _hf_config(cfg):
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


def _dtype(name: str, device: str, bf16: bool):
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


def _discover(cfg, device: str, bf16: bool) -> _Model:

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


def _discover_quietly(cfg, device: str, bf16: bool) -> _Model:
    import torch

    from tuneforge.kernels.levers import wanted
    from tuneforge.methods import MethodContext
    from tuneforge.registry import METHODS, TASKS

    notes: list[str] = []
    task_cls = TASKS.get(cfg.task.type)
    method = METHODS.get(cfg.method.name)(cfg.method)
    hf = _hf_config(cfg)
    dtype = _dtype(cfg.model.dtype, device, bf16)
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
        from tuneforge.models.shrink import find_blocks, keep_layers, resolve_keep_layers

        keep_layers(model, resolve_keep_layers(cfg.model.keep_layers, len(find_blocks(model)[1])))
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
    if applied:
        try:
            levers = method.speed_levers(model, cfg.train, cuda)
            fused = any(lv.on for lv in levers if lv.key == "fused_lora")
        except TuneforgeError:
            raise
        except Exception:
            fused = False
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
    return _Model(
        model, hf, weight_bytes, tbytes, sum(tsizes), total_params, tsizes, tdt, stream, fused, chunked, notes
    )


# ---- activations ------------------------------------------------------------------------------------------------
_SHARED_INPUT = (
    {"q_proj", "k_proj", "v_proj", "query", "key", "value", "qkv_proj", "Wqkv", "c_attn"},
    {"gate_proj", "up_proj", "w1", "w3", "gate_up_proj"},
)


@dataclass
class _Run:
    """The settings the per-token formulas need."""

    batch: int
    seq: int
    compute: int  # bytes of block activations (the autocast dtype, else the residual stream's)
    stream: int  # bytes of the residual stream (the embeddings' dtype after the method)
    autocast: bool
    liger: bool
    checkpointing: bool
    device: str = "cuda"
    image_side: int | None = None  # image models: the input's side in pixels (then `seq` is unused)

    def mask(self, elem: int) -> int:
        """Bytes per element that dropout keeps for backward on a tensor of `elem`-byte values: a bool mask on a GPU
        (`native_dropout`); on CPU torch multiplies by a noise tensor of the input's own dtype and keeps that."""
        return 1 if self.device == "cuda" else elem


def _linears(block):
    """(name, module, base Linear, adapter params, dropout p) for each linear layer of a block; adapter wrappers
    (modules with a `base_layer`, PEFT's convention) count once with their trainable extras."""
    import torch

    out, wrapped = [], set()
    for name, mod in block.named_modules():
        base = getattr(mod, "base_layer", None)
        if isinstance(base, torch.nn.Linear) or (base is not None and hasattr(base, "in_features")):
            extras = [p for n, p in mod.named_parameters() if p.requires_grad and not n.startswith("base_layer.")]
            drops = [
                d.p
                for n, d in mod.named_modules()
                if isinstance(d, torch.nn.Dropout) and not n.startswith("base_layer")
            ]
            out.append((name, mod, base, extras, max(drops, default=0.0)))
            wrapped.update(id(m) for m in mod.modules())
    for name, mod in block.named_modules():
        if id(mod) not in wrapped and (
            isinstance(mod, torch.nn.Linear)
            or (type(mod).__name__.startswith("Linear") and hasattr(mod, "in_features"))
        ):
            out.append((name, mod, mod, [], 0.0))
    return out


def _norm_bytes(mod, r: _Run, h: int) -> int:
    import torch

    rms = "rms" in type(mod).__name__.lower()
    w = getattr(mod, "weight", None)
    # a Python norm (HF's RMSNorm) multiplies its weight by the normalized input, which autograd keeps for the
    # weight's gradient; torch's fused layer_norm gets that gradient from the input, mean and rstd it keeps anyway
    fused = isinstance(mod, torch.nn.LayerNorm)
    extra = r.compute * h if w is not None and w.requires_grad and not fused else 0
    if rms and not r.liger:
        return 4 * h + 4 + extra  # the HF RMSNorm's float32 copy of its input, and the reciprocal norm
    return r.stream * h + 8 + extra


def _block_bytes(block, hf, r: _Run, fused: bool) -> int:
    """Bytes autograd keeps per token for one transformer block (no checkpointing)."""
    import torch

    h = hf.hidden_size
    c = r.compute
    n_heads = getattr(hf, "num_attention_heads", 1)
    head_dim = getattr(hf, "head_dim", None) or h // max(n_heads, 1)
    kv = (getattr(hf, "num_key_value_heads", None) or n_heads) * head_dim
    inter = getattr(hf, "intermediate_size", None) or getattr(hf, "n_inner", None) or 4 * h
    total = 0
    names = [n for n, _ in block.named_modules()]
    for name, mod in block.named_modules():
        if "norm" in type(mod).__name__.lower() and hasattr(mod, "weight"):
            total += _norm_bytes(mod, r, h)
        elif (
            isinstance(mod, torch.nn.Dropout)
            and mod.p > 0
            and not re.search(
                r"(self|attn|attention)\.dropout$|"
                r"(attn|attention)_dropout$",
                name,
            )
        ):
            if not any(name.startswith(w) for w in ("lora_", "base_layer")) and ".lora_dropout" not in name:
                total += r.mask(r.stream) * h  # dropout's mask (hidden dropout before a residual add)
    groups: dict[tuple, list] = {}
    for name, _mod, base, extras, p in _linears(block):
        parent, _, leaf = name.rpartition(".")
        gid = next((i for i, s in enumerate(_SHARED_INPUT) if leaf in s), None)
        groups.setdefault((parent, gid) if gid is not None else (name,), []).append((base, extras, p))
    for members in groups.values():
        d_in = members[0][0].in_features
        keep_input = False
        for base, extras, p in members:
            if base.weight.requires_grad:
                keep_input = True
            if not extras:
                continue
            a_bytes = max(e.element_size() for e in extras)
            rank = sum(e.shape[0] for e in extras if e.ndim == 2 and e.shape[-1] == d_in)
            eff = c if r.autocast else a_bytes
            if fused and p == 0:
                keep_input = True
                total += c * rank
            elif p > 0:  # the adapter's dropout: its mask and its output (the adapter's input) per layer
                total += (r.mask(eff) + eff) * d_in + eff * rank * 2
            elif eff != c or r.autocast:
                total += eff * d_in + eff * rank * 2  # PEFT's cast of the input to the adapter's dtype
            else:
                keep_input = True
                total += eff * rank * 2
        if keep_input:
            total += c * d_in
    # attention core
    impl = getattr(hf, "_attn_implementation", None) or "sdpa"
    attn_p = float(getattr(hf, "attention_dropout", 0.0) or getattr(hf, "attention_probs_dropout_prob", 0.0) or 0.0)
    q = c * n_heads * head_dim
    # torch's CPU SDPA takes the math path (probabilities kept) when attention dropout is on in training
    if impl == "eager" or (r.device == "cpu" and attn_p > 0):
        total += q + 2 * c * kv + c * n_heads * r.seq + ((r.mask(c) + c) * n_heads * r.seq if attn_p > 0 else 0)
    else:  # SDPA / flash: q, k, v, output and the log-sum-exp
        total += q + 2 * c * kv + c * n_heads * head_dim + 4 * n_heads
    # the MLP's activation function
    gated = any(n.rpartition(".")[2] in ("gate_proj", "w1", "gate_up_proj") for n in names)
    if gated:
        total += (2 if r.liger else 3) * c * inter
    else:
        total += c * inter
    return total


def _blocks(model) -> list:
    """The transformer blocks: the longest ModuleList of identical module types (through any wrapper)."""
    import torch

    best: list = []
    for mod in model.modules():
        if (
            isinstance(mod, torch.nn.ModuleList)
            and len(mod) > len(best)
            and len({type(b) for b in mod}) == 1
            and any(True for _ in mod[0].parameters())
        ):
            best = list(mod)
    return best


def image_side(cfg, hf) -> int | None:
    """The square input side of an image model (`data.image_size`, else its preprocessor_config.json's, else
    its config's), None for models that take tokens."""
    if getattr(hf, "num_channels", None) is None:
        return None
    side = getattr(cfg.data, "image_size", None)
    if not side:
        from tuneforge.data.images import Preprocessing
        from tuneforge.models.loader import resolve_model

        path = Path(resolve_model(cfg.model.name, cfg.model.revision))
        if (path / "preprocessor_config.json").is_file():
            prep = Preprocessing.from_dir(path)
            side = max(prep.height, prep.width)
    side = side or getattr(hf, "image_size", None) or 224
    return int(side if isinstance(side, int) else max(side))


def _image_activations(m: _Model, r: _Run, side: int) -> tuple[int, int, list[str]]:
    """An image model's activations, measured: one forward pass on the meta device, summing the outputs of every
    leaf module (what autograd keeps for backward, an upper bound where layers compute in place)."""
    import torch

    total = [0]

    def count(_mod, _inp, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                total[0] += t.numel()

    leaves = [mod for mod in m.model.modules() if not any(True for _ in mod.children())]
    hooks = [mod.register_forward_hook(count) for mod in leaves]
    try:
        with torch.device("meta"), torch.no_grad():
            m.model(pixel_values=torch.empty(r.batch, int(getattr(m.hf_config, "num_channels", 3)), side, side))
    finally:
        for h in hooks:
            h.remove()
    return (
        total[0] * r.compute + r.batch * 3 * side * side * 4,
        0,
        [
            f"image model: activations measured on one meta forward pass at {side}x{side} "
            f"(every layer's output kept for backward; gradient checkpointing not modelled)"
        ],
    )


def _activations(m: _Model, r: _Run) -> tuple[int, int, list[str]]:
    """(bytes kept from forward to backward, extra bytes while one block is recomputed) for the batch."""
    import torch

    if r.image_side:
        return _image_activations(m, r, r.image_side)

    tokens = r.batch * r.seq
    hf = m.hf_config
    h = hf.hidden_size
    blocks = _blocks(m.model)
    per_block = [_block_bytes(b, hf, r, m.fused_adapters) for b in blocks]
    in_blocks = {id(x) for b in blocks for x in b.modules()}
    outside = 24  # input ids, labels, attention mask (int64)
    for name, mod in m.model.named_modules():
        if id(mod) in in_blocks:
            continue
        if "norm" in type(mod).__name__.lower() and hasattr(mod, "weight"):
            outside += _norm_bytes(mod, r, h)
        elif isinstance(mod, torch.nn.Dropout) and mod.p > 0 and "lora" not in name:
            outside += r.mask(r.stream) * h
    notes = []
    if not blocks:
        notes.append("no transformer block list found: activations estimated from the parameter count only")
        per_block = [34 * r.compute * h]
    if r.checkpointing:
        kept = len(per_block) * r.stream * h + outside
        return kept * tokens, max(per_block) * tokens, notes
    return (sum(per_block) + outside) * tokens, 0, notes


def _loss_bytes(m: _Model, r: _Run, device: str) -> tuple[int, str]:
    """Peak bytes of the loss computation and a note."""
    from tuneforge.kernels.chunked_ce import default_chunk_rows

    core = m.model.get_base_model() if hasattr(m.model, "get_base_model") else m.model
    try:
        head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    except NotImplementedError:
        head = None
    vocab = getattr(head, "out_features", 0) if head is not None else 0
    tokens = r.batch * r.seq
    if not vocab:
        return 0, "loss head: small (no vocabulary-sized logits)"
    if m.chunked_loss:
        h = m.hf_config.hidden_size
        rows = default_chunk_rows(tokens, h, vocab)
        dw = vocab * h * r.compute if head.weight.requires_grad else 0
        return rows * vocab * (
            4 + r.compute
        ) + tokens * h * r.compute + dw, f"chunked loss: {rows} rows x {vocab} vocabulary per chunk"
    return 12 * vocab * tokens, f"full logits: {tokens} tokens x {vocab} vocabulary (fp32 copy, log-softmax, gradient)"


def _optimizer_bytes(m: _Model, optimizer: str) -> tuple[int, str]:
    if "8bit" in optimizer:
        big = sum(n for n in m.trainable_sizes if n >= 4096)
        small = m.trainable_params - big
        note = "8-bit AdamW (bitsandbytes): 2 bytes/param + block scales" + (
            "; paged: can spill to CPU, counted in full" if optimizer.startswith("paged") else ""
        )
        return int(big * (2 + 8 / 256)) + small * 8, note
    return 2 * m.trainable_bytes, f"AdamW: 2 states x {m.trainable_dtype_bytes} bytes/param"


def _liger_on(value, device: str) -> bool:
    if value is False:
        return False
    if value is True:
        return True
    return device == "cuda" and importlib.util.find_spec("liger_kernel") is not None


def estimate_memory(
    cfg,
    nproc: int = 1,
    strategy: str = "ddp",
    device: str = "cuda",
    *,
    bf16: bool = True,
    batch_size: int | None = None,
    seq_len: int | None = None,
) -> Estimate:
    """Per-device peak training memory of `cfg` (a RunConfig) on `nproc` devices sharded by `strategy`.

    `device`: "cuda" (a GPU; `bf16`: whether it computes in bf16, else `auto` dtypes resolve to float16) or "cpu".
    `batch_size` / `seq_len` override `train.batch_size` / `data.max_length` (for tables).
    Raises ConfigError for an unknown strategy or a model whose config cannot be read."""
    _check_strategy(strategy, nproc)
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"device: '{device}' is not 'cuda' or 'cpu'")
    import torch

    m = _discover(cfg, device, bf16)
    t = cfg.train
    precision = t.precision if t.precision != "auto" else (("bf16" if bf16 else "fp16") if device == "cuda" else "fp32")
    autocast = precision in ("bf16", "fp16") and device == "cuda"
    weight_dtype_bytes = torch.empty((), dtype=_dtype(cfg.model.dtype, device, bf16)).element_size()
    seq = seq_len or cfg.data.max_length or 512
    batch = batch_size or t.batch_size
    liger = _liger_on(t.liger, device)
    side = image_side(cfg, m.hf_config)
    r = _Run(
        batch=batch,
        seq=seq,
        compute=2 if autocast else m.stream_bytes,
        stream=m.stream_bytes,
        autocast=autocast,
        liger=liger,
        checkpointing=t.gradient_checkpointing,
        device=device,
        image_side=side,
    )
    kept, recompute, act_notes = _activations(m, r)
    loss, loss_note = _loss_bytes(m, r, device)
    optimizer = t.optimizer if t.optimizer != "auto" else "adamw_fused"
    opt, opt_note = _optimizer_bytes(m, optimizer)

    weights, grads, trainable_w = m.weight_bytes, m.trainable_bytes, m.trainable_bytes
    overhead = CUDA_OVERHEAD if device == "cuda" else 0
    notes = list(m.notes) + act_notes
    if autocast and m.trainable_dtype_bytes == 4:
        overhead += m.trainable_bytes // 2  # autocast caches a 16-bit copy of each fp32 weight it casts
    shard_note = "no sharding"
    if nproc > 1:
        if strategy == "ddp":
            overhead += grads
            shard_note = f"DDP on {nproc} devices: full replica each, plus a gradient bucket copy"
        elif strategy == "deepspeed-zero2":
            grads, opt = -(-grads // nproc), -(-opt // nproc)
            shard_note = f"ZeRO-2 on {nproc} devices: gradients and optimizer states divided"
        else:
            n_blocks = len(_blocks(m.model)) or 1
            gathered = 2 * m.weight_bytes // max(n_blocks, 1)  # the block computing and the one prefetched
            weights, trainable_w = -(-weights // nproc), -(-trainable_w // nproc)
            grads, opt = -(-grads // nproc), -(-opt // nproc)
            overhead += gathered
            shard_note = (
                f"{'FSDP full shard' if strategy == 'fsdp' else 'ZeRO-3'} on {nproc} devices: weights, "
                f"gradients and optimizer states divided; two gathered blocks in overhead"
            )
    # the loss peak (start of backward) and one recomputed block (later in backward) do not overlap in time
    activations = kept + max(0, recompute - loss)
    logits = loss
    total = weights + grads + opt + activations + logits + overhead
    notes += [
        f"device {device}, weights {weight_dtype_bytes * 8}-bit as loaded, precision {precision}"
        + (" (autocast)" if autocast else ""),
        f"batch {batch} images of {side}x{side} pixels"
        if side
        else f"batch {batch} x {seq} tokens (data.max_length: the longest batch; shorter batches use less)",
        "gradient checkpointing "
        + (
            "on: block inputs kept, one block recomputed at a time"
            if t.gradient_checkpointing
            else "off: every block's activations kept"
        ),
        loss_note,
        opt_note,
        shard_note,
    ]
    if m.fused_adapters:
        notes.append("fused LoRA layers: each adapted layer keeps only its input and the rank-r product")
    if liger:
        notes.append("liger kernels on (train.liger): RMSNorm/SwiGLU keep fewer tensors")
    return Estimate(
        weights=weights,
        trainable_weights=trainable_w,
        gradients=grads,
        optimizer=opt,
        activations=activations,
        logits=logits,
        overhead=overhead,
        total=total,
        trainable_params=m.trainable_params,
        total_params=m.total_params,
        nproc=nproc,
        strategy=strategy,
        assumptions=notes,
    )


# ---- what to change when it does not fit ---------------------------------------------------------------------------
def _with(cfg, overrides: list[str]):
    """A copy of `cfg` with `key=value` overrides, validated like a config file (no machine checks)."""
    from tuneforge.config import apply_overrides, validate_config

    raw = cfg.model_dump(mode="json")
    method_over = [o for o in overrides if o.startswith("method.name=")]
    if method_over:  # a new method: keep the keys the new method also has
        from tuneforge.registry import METHODS

        new = method_over[0].split("=", 1)[1]
        fields = METHODS.get(new).Config.model_fields
        raw["method"] = {k: v for k, v in raw["method"].items() if k in fields and k not in ("name", "quantization")}
        raw["method"]["name"] = new
        overrides = [o for o in overrides if o not in method_over]
    return validate_config(apply_overrides(copy.deepcopy(raw), overrides), environment=False)


def _candidates(cfg, device: str) -> list[list[str]]:
    """Changes to try, cheapest first (none changes what is learned except the last two)."""
    from tuneforge.registry import METHODS

    t = cfg.train
    out: list[list[str]] = []
    if not t.gradient_checkpointing:
        out.append(["train.gradient_checkpointing=true"])
    if t.chunked_loss is not True and not (t.chunked_loss == "auto" and device == "cuda"):
        out.append(["train.chunked_loss=true"])
    b = t.batch_size
    while b > 1:
        b //= 2
        k = -(-t.batch_size // b) * t.gradient_accumulation_steps
        out.append([f"train.batch_size={b}", f"train.gradient_accumulation_steps={k}"])
    if "8bit" not in t.optimizer and importlib.util.find_spec("bitsandbytes") is not None:
        out.append(["train.optimizer=adamw_8bit"])
    if "qlora" in METHODS.names() and cfg.method.name != "qlora" and device == "cuda":
        out.append(["method.name=qlora"])
    return out


def suggestions(
    cfg,
    est: Estimate,
    budget_bytes: int,
    nproc: int = 1,
    strategy: str = "ddp",
    *,
    device: str = "cuda",
    bf16: bool = True,
    limit: int = 4,
    best_effort: bool = False,
) -> list[str]:
    """The cheapest changes that make `cfg` fit in `budget_bytes` per device, each re-estimated on a copy of `cfg`:
    config override lines such as 'train.gradient_checkpointing=true (-12.3 GiB)', or '--nproc 4 --strategy fsdp'.
    When no single change fits, the smallest combination of them that does; when nothing found fits, [] (or with
    `best_effort`, the changes that save most, each saying how far over it stays)."""
    out: list[str] = []
    singles: list[tuple[list[str], int]] = []
    for change in _candidates(cfg, device):
        try:
            e = estimate_memory(_with(cfg, change), nproc, strategy, device, bf16=bf16)
        except TuneforgeError:
            continue
        if e.total < est.total:
            singles.append((change, e.total))
        if e.total <= budget_bytes:
            if change[0].startswith("train.batch_size") and any(s.startswith("train.batch_size") for s in out):
                continue
            out.append(f"{' '.join(change)} (-{(est.total - e.total) / GIB:.1f} GiB)")
        if len(out) >= limit:
            return out
    if not out:  # combine the helpful changes in order until it fits
        combo: list[str] = []
        for change, _ in singles:
            if change[0].startswith("train.batch_size") and any(c.startswith("train.batch_size") for c in combo):
                continue
            trial = combo + change
            try:
                e = estimate_memory(_with(cfg, trial), nproc, strategy, device, bf16=bf16)
            except TuneforgeError:
                continue
            if e.total < est.total:
                combo = trial
            if e.total <= budget_bytes:
                out.append(f"{' '.join(combo)} (-{(est.total - e.total) / GIB:.1f} GiB)")
                break
    if device == "cuda":
        for n in (2, 4, 8, 16, 32, 64):
            if n <= nproc:
                continue
            e = estimate_memory(cfg, n, "fsdp", device, bf16=bf16)
            if e.total <= budget_bytes:
                out.append(f"--nproc {n} --strategy fsdp (-{(est.total - e.total) / GIB:.1f} GiB per device)")
                break
    if not out and best_effort:
        for change, total in sorted(singles, key=lambda x: x[1])[:limit]:
            out.append(
                f"{' '.join(change)} (-{(est.total - total) / GIB:.1f} GiB; still {_gib(total - budget_bytes)} over)"
            )
    return out[: limit + 1]


# ---- what the engine prints ------------------------------------------------------------------------------------
def _gib(b: int) -> str:
    return f"{b / GIB:.1f} GiB" if abs(b) >= GIB // 10 else f"{b / 2**20:.1f} MiB"


def start_of_run_lines(cfg, nproc: int = 1, strategy: str = "ddp") -> list[str]:
    """2-4 short lines for the start of a run: the estimated peak and its parts, and whether it fits this device.
    `nproc` / `strategy` (one of STRATEGIES): how a multi-process run spreads the model. Never raises (an estimate
    that cannot be made is one line saying why)."""
    try:
        import torch

        cuda = torch.cuda.is_available()
        device = "cuda" if cuda else "cpu"
        bf16 = bool(cuda and torch.cuda.is_bf16_supported())
        est = estimate_memory(cfg, nproc=nproc, strategy=strategy, device=device, bf16=bf16)
        lines = [
            f"tuneforge: estimated peak memory {_gib(est.total)} per device: weights {_gib(est.weights)}, "
            f"gradients {_gib(est.gradients)}, optimizer {_gib(est.optimizer)}, activations "
            f"{_gib(est.activations)}, logits {_gib(est.logits)}, overhead {_gib(est.overhead)}"
        ]
        if cuda:
            total = torch.cuda.get_device_properties(0).total_memory
            where = torch.cuda.get_device_name(0)
        else:
            total = _ram_bytes()
            where = "RAM"
        if total:
            if est.total <= total:
                lines.append(f"tuneforge: fits in {_gib(total)} ({where})")
            else:
                tips = suggestions(cfg, est, total, nproc, strategy, device=device, bf16=bf16, limit=2)
                lines.append(
                    f"tuneforge: may not fit in {_gib(total)} ({where})" + (f"; try {'; '.join(tips)}" if tips else "")
                )
        return lines
    except Exception as exc:
        return [f"tuneforge: memory estimate unavailable ({first_line(exc, 120, with_type=True)})"]


def _ram_bytes() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def oom_message(cfg, device_total_bytes: int | None) -> str:
    """One line for a CUDA out-of-memory error during training:
    'CUDA out of memory (estimated peak X GiB of Y GiB): try <suggestion>; <suggestion>'. Never raises."""
    try:
        import torch

        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or not torch.cuda.is_available()
        if device_total_bytes is None and torch.cuda.is_available():
            device_total_bytes = torch.cuda.get_device_properties(0).total_memory
        est = estimate_memory(cfg, device="cuda", bf16=bf16)
        of = f" of {_gib(device_total_bytes)}" if device_total_bytes else ""
        budget = device_total_bytes if device_total_bytes else int(est.total * 0.7)
        tips = suggestions(cfg, est, min(budget, est.total - 1), device="cuda", bf16=bf16, limit=2)
        if not tips:
            tips = [
                "train.gradient_checkpointing=true",
                "a smaller train.batch_size with more train.gradient_accumulation_steps",
            ]
        return f"CUDA out of memory (estimated peak {_gib(est.total)}{of}): try {'; '.join(tips)}"
    except Exception:
        return (
            "CUDA out of memory: try train.gradient_checkpointing=true; a smaller train.batch_size with more "
            "train.gradient_accumulation_steps; train.optimizer=adamw_8bit"
        )


def fits_line(est: Estimate, budget: int, label: str) -> str:
    """'fits in 15.0 GiB (t4): 3.2 GiB to spare' or 'does not fit in ...: 2.1 GiB over'."""
    if est.total <= budget:
        return f"fits in {_gib(budget)} ({label}): {_gib(budget - est.total)} to spare"
    return f"does not fit in {_gib(budget)} ({label}): {_gib(est.total - budget)} over"
