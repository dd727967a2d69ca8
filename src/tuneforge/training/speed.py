"""Speed and memory levers, each a `train.*` switch with an automatic default: on where the hardware
gains from it (CUDA), off on CPU with a one-line note. `auto` never fails; an explicit `true` that cannot
apply is a ConfigError naming the key.

    train.chunked_loss  fused linear + cross-entropy (no full logits; the task decides where it applies)
    train.fused_lora    the method's own fused path, offered through `Method.speed_levers`
    train.compile       torch.compile each transformer block (CUDA only: `true` on CPU is a ConfigError; auto: off
                        when liger is on; never traces into liger's Triton kernels, see `fence_off_liger`)
    train.liger         liger-kernel's RMSNorm / RoPE / SwiGLU kernels (optional `gpu` extra)
    train.optimizer     AdamW implementation (fused on torch >= 2.8 / CUDA; bitsandbytes 8-bit on request)

The engine calls `apply_speedups` once, after the method has been applied, and `optimizer_name` for the
Trainer's `optim`; neither looks at which task or method runs (the task says whether it can use a fused
loss through `Task.use_fused_loss`, the method switches on its own paths through `Method.speed_levers`).
`Lever` and `wanted` live in `tuneforge.kernels.levers` (so methods can build levers) and are re-exported here.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys

import torch
from torch import nn

from tuneforge.errors import ConfigError, first_line
from tuneforge.kernels.levers import NO_GPU, Lever, wanted  # Lever, wanted: re-exported for callers here

log = logging.getLogger("tuneforge")

OPTIMIZERS = {
    "adamw": "adamw_torch",
    "adamw_fused": "adamw_torch_fused",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def optimizer_name(value: str) -> str:
    """transformers' `optim` name for `train.optimizer`.

    Raises ConfigError when an 8-bit optimizer is asked for without bitsandbytes."""
    if value == "auto":
        fused_ok = cuda_available() or tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 8)
        return "adamw_torch_fused" if fused_ok else "adamw_torch"
    if "8bit" in value and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"train.optimizer: '{value}' needs bitsandbytes: pip install 'tuneforge[quant]'")
    return OPTIMIZERS[value]


def _compile_blocks(model: nn.Module) -> int:
    from tuneforge.models.blocks import find_blocks

    _, blocks = find_blocks(model)
    for block in blocks:
        block.compile()  # in place: parameter names and state-dict keys stay as they were
    return len(blocks)


def _apply_liger(model: nn.Module) -> None:
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    # our chunked loss owns the output layer + loss; liger keeps to the per-layer kernels
    _apply_liger_kernel_to_instance(model=core, fused_linear_cross_entropy=False, cross_entropy=False)


# ---- liger and compile ------------------------------------------------------------------------------------
# Inductor cannot compile liger's Triton kernels (RMSNorm fails with "AttributeError: 'float' object has no
# attribute 'to'", and every block prints a page of warnings first), so compile never traces into them:
#  * compile `auto` with liger on: compile stays off. Liger's kernels already make the elementwise fusions
#    compile would make in a decoder block (RMSNorm, RoPE, SwiGLU); what is left between them is GEMMs and
#    SDPA, and each liger call would be a graph break, so little is left to gain for the compile time.
#  * compile `true` with liger on (asked for explicitly): the blocks are compiled, with every forward and
#    module-level function liger installed wrapped in torch.compiler.disable, so they run eagerly between
#    compiled graphs.
LIGER_ON_COMPILE_AUTO = (
    "off: liger's kernels already fuse the norms, RoPE and SwiGLU, and Inductor cannot "
    "compile them (train.compile=true compiles around them)"
)


def _from_liger(fn) -> bool:
    fn = getattr(fn, "__func__", fn)
    return (getattr(fn, "__module__", None) or "").startswith("liger_kernel")


def liger_patches(model: nn.Module) -> tuple[list[nn.Module], list[tuple[object, str]]]:
    """What liger-kernel installed in `model`: (modules whose forward is liger's: instance-bound forwards such
    as its RMSNorm / SwiGLU, or liger module classes; (python module, name) of module-level functions it
    swapped into the model's modeling files, such as `apply_rotary_pos_emb`)."""
    modules = [
        m
        for m in model.modules()
        if _from_liger(m.__dict__.get("forward", type(m).forward)) or type(m).__module__.startswith("liger_kernel")
    ]
    functions = []
    for modname in sorted({type(m).__module__ for m in model.modules()}):
        pymod = sys.modules.get(modname)
        if pymod is None or modname.startswith("liger_kernel"):
            continue
        functions += [
            (pymod, name) for name, val in vars(pymod).items() if inspect.isfunction(val) and _from_liger(val)
        ]
    return modules, functions


def fence_off_liger(model: nn.Module) -> int:
    """Make torch.compile run liger's kernels eagerly (a graph break around each) instead of tracing them.
    Idempotent. Returns how many forwards / functions are fenced off."""
    modules, functions = liger_patches(model)
    why = "liger-kernel Triton kernel (see tuneforge/training/speed.py)"
    for m in modules:
        if not getattr(m.forward, "_torchdynamo_disable", False):
            m.forward = torch.compiler.disable(m.forward, reason=why)
    for pymod, name in functions:
        fn = getattr(pymod, name)
        if not getattr(fn, "_torchdynamo_disable", False):
            setattr(pymod, name, torch.compiler.disable(fn, reason=why))
    return len(modules) + len(functions)


def apply_speedups(model: nn.Module, train_cfg, task=None, method=None) -> list[Lever]:
    """Switch on the levers `train_cfg` (a TrainSection) asks for, in place; print one line per lever.

    Args:
        model: the model after `method.apply` (PEFT wrapper or plain transformers model).
        train_cfg: the run's `train` section (chunked_loss, fused_lora, compile, liger).
        task: the Task, asked through `use_fused_loss(model)` whether it can take a chunked loss.
        method: the Method, asked through `speed_levers(model, train_cfg, cuda)` for its own fast paths
            (`train.fused_lora`); None: no method levers.
    Returns the resolved levers, in the order liger, chunked_loss, the method's, compile. Raises ConfigError
    for an explicit `true` that cannot apply."""
    cuda = cuda_available()
    levers: list[Lever] = []
    no_gpu = NO_GPU

    # liger first: it replaces module forwards that the other levers then see
    liger_ok = cuda and importlib.util.find_spec("liger_kernel") is not None
    on, note = wanted(
        train_cfg.liger,
        "liger",
        liger_ok,
        no_gpu if not cuda else "liger-kernel is not installed (pip install 'tuneforge[gpu]')",
    )
    if on:
        try:
            _apply_liger(model)
        except Exception as exc:
            if train_cfg.liger is True:
                raise ConfigError(f"train.liger: {first_line(exc)}") from None
            on, note = False, f"off: {first_line(exc, 120)}"
    levers.append(Lever("liger", on, note))

    on, note = wanted(train_cfg.chunked_loss, "chunked_loss", cuda or train_cfg.chunked_loss is True, no_gpu)
    if on:
        reason = task.use_fused_loss(model) if task is not None else "no task given"
        if reason is not None:
            if train_cfg.chunked_loss is True:
                raise ConfigError(f"train.chunked_loss: true, but {reason}; set it to auto or false")
            on, note = False, f"off: {reason}"
    levers.append(Lever("chunked_loss", on, note))

    if method is not None:
        levers += method.speed_levers(model, train_cfg, cuda)

    # CPU compilation takes minutes before the first step and does not pay off: `true` needs CUDA (load_config
    # refuses it already, through tuneforge.config.environment.check_levers)
    liger_on = next(lv.on for lv in levers if lv.key == "liger")
    on, note = wanted(train_cfg.compile, "compile", cuda, no_gpu)
    if on and liger_on and train_cfg.compile == "auto":
        on, note = False, LIGER_ON_COMPILE_AUTO  # why: see the comment above LIGER_ON_COMPILE_AUTO
    if on:
        try:
            fenced = fence_off_liger(model) if liger_on else 0
            note += f": {_compile_blocks(model)} blocks" + (f", {fenced} liger kernels left eager" if fenced else "")
        except Exception as exc:
            if train_cfg.compile is True:
                raise ConfigError(f"train.compile: {first_line(exc)}") from None
            on, note = False, f"off: {first_line(exc, 120)}"
    levers.append(Lever("compile", on, note))

    print("tuneforge: speed levers: " + "; ".join(f"{lv.key} {lv.note}" for lv in levers), file=sys.stderr, flush=True)
    return levers
