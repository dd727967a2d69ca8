"""Checks of a valid config against this machine (CUDA or CPU, installed packages), run by `load_config` so that
`tuneforge validate` and `tuneforge train` refuse what cannot run here before any run directory or model exists.

The training engine and the speed levers call the same functions, so a message has one source."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from tuneforge.errors import ConfigError

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def cpu_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls in hardware (AVX512-BF16 or AMX), so bf16 autocast pays off on it."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: assume not
        return False


#: `auto` picks bf16 autocast on a CPU with bf16 units for models at least this wide (hidden size). Narrower, the
#: casts cost more than the faster matmuls save. Measured on a 2-core AMD EPYC with AVX512-BF16 (no AMX), one
#: training step, bf16 autocast vs fp32:
#: BERT width 32: 0.72x, 64: 1.15x, 128: 1.22x, 256: 1.37x, 384: 1.44x; Llama width 64: 1.03x, 256: 1.22x, 576: 1.43x
AUTO_CPU_BF16_MIN_WIDTH = 256


def model_width(config) -> int | None:
    """The hidden size of a transformers config (or a model: its `.config`), None where it has none (conv nets)."""
    config = getattr(config, "config", config)
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def auto_cpu_bf16(width: int | None) -> bool:
    """Whether `auto` computes in bf16 on this CPU for a model `width` wide (None: unknown, no): the CPU has bf16
    units and the model is at least AUTO_CPU_BF16_MIN_WIDTH wide. Training and inference share this rule."""
    return width is not None and width >= AUTO_CPU_BF16_MIN_WIDTH and cpu_bf16()


def resolve_precision(precision: str, width: int | None = None) -> str:
    """`train.precision` as it will run here: fp32, bf16 or fp16. `auto` on a CPU is bf16 autocast when the CPU has
    bf16 units (`cpu_bf16`) and the model is at least AUTO_CPU_BF16_MIN_WIDTH wide (`width`: its hidden size; None,
    unknown: fp32), else fp32; `bf16` there autocasts whenever the CPU has the units. Raises ConfigError for fp16 on a
    CPU, bf16 on a CPU without bf16 units, or bf16 on a GPU without bf16 support."""
    import torch

    cuda = cuda_available()
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if auto_cpu_bf16(width) else "fp32"
    if precision == "bf16" and not cuda:
        if cpu_bf16():  # autocast on the CPU's bf16 units (AVX512-BF16 / AMX): faster matmuls, fp32 weights kept
            return "bf16"
        raise ConfigError(
            "train.precision: 'bf16' needs a GPU or a CPU with bf16 units (AVX512-BF16 or AMX); use fp32 (or auto)"
        )
    if precision == "fp16" and not cuda:
        raise ConfigError(f"train.precision: '{precision}' mixed precision needs a GPU; use fp32 (or auto) on CPU")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: 'bf16' is not supported by this GPU; use fp16 or auto")
    return precision


def precision_note(asked: str, resolved: str, width: int | None) -> str:
    """One line saying which precision a run computes in and why (printed among a run's first lines)."""
    if cuda_available():
        why = "asked for" if asked != "auto" else "auto on this GPU"
        return f"precision {resolved} ({why})"
    if resolved == "bf16":
        why = (
            "asked for"
            if asked != "auto"
            else f"auto: this CPU has bf16 units and the model is {width} wide; train.precision=fp32 turns it off"
        )
        return f"precision bf16 autocast on CPU, fp32 weights and optimizer ({why})"
    if asked != "auto":
        return "precision fp32 (asked for)"
    if not cpu_bf16():
        return "precision fp32 (auto: this CPU has no bf16 units)"
    shown = "of unknown width" if width is None else f"{width} wide"
    return (
        f"precision fp32 (auto: the model is {shown}, under {AUTO_CPU_BF16_MIN_WIDTH} bf16 does not pay off; "
        f"train.precision=bf16 forces it)"
    )


def resolve_report_to(value: str) -> list[str] | str:
    """Trainer's report_to for `train.report_to`; a tracker that is asked for by name must be installed."""
    if value == "none":
        return "none"
    if value == "auto":
        return ["tensorboard"] if installed("tensorboard") else "none"
    if not installed(TRACKER_PACKAGES.get(value, value)):
        raise ConfigError(f"train.report_to: '{value}' is not installed (pip install {value}), or use 'none'")
    return [value]


def check_levers(train_cfg) -> None:
    """Explicit `true` speed levers that cannot work on this machine, and 8-bit optimizers without bitsandbytes."""
    cuda = cuda_available()
    if train_cfg.liger is True:
        if not cuda:
            raise ConfigError("train.liger: true, but no CUDA device (it pays off on GPUs); set it to auto or false")
        if not installed("liger_kernel"):
            raise ConfigError(
                "train.liger: true, but liger-kernel is not installed (pip install 'tuneforge[gpu]'); "
                "set it to auto or false"
            )
    if train_cfg.compile is True and not cuda:
        raise ConfigError(
            "train.compile: true needs a CUDA device (on CPU, compiling takes minutes before the first "
            "step and does not pay off); set it to auto or false"
        )
    if "8bit" in train_cfg.optimizer and not installed("bitsandbytes"):
        raise ConfigError(
            f"train.optimizer: '{train_cfg.optimizer}' needs bitsandbytes: pip install 'tuneforge[quant]'"
        )


def check_distributed(train_cfg) -> None:
    """`train.distributed.strategy` that cannot run here: FSDP and DeepSpeed need CUDA GPUs (accelerate runs FSDP
    only on GPUs and silently falls back to DDP on CPU), DeepSpeed needs its package."""
    strategy = train_cfg.distributed.strategy
    if strategy == "ddp":
        return
    if not cuda_available():
        raise ConfigError(
            f"train.distributed.strategy: '{strategy}' needs CUDA GPUs (accelerate shards models only "
            f"there); on CPU use ddp"
        )
    if strategy == "deepspeed" and not installed("deepspeed"):
        raise ConfigError(
            "train.distributed.strategy: 'deepspeed' needs DeepSpeed: pip install deepspeed (or use fsdp)"
        )


def _run_state(status) -> str | None:
    """`state` of a run's status.json; None without one, `unreadable` when it cannot be read."""
    import json

    if not status.is_file():
        return None
    try:
        return json.loads(status.read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return "unreadable"


def teacher_kind(path: str) -> str:
    """What a `distill.teacher` directory is: `run` (a tuneforge run or its model/), `export` or `model` (a
    transformers model directory). Raises ConfigError (one line, naming the key) when it cannot teach: missing,
    a run still running or failed, not a model at all."""
    from pathlib import Path

    p = Path(path)
    key = "distill.teacher"
    if not p.is_dir():
        raise ConfigError(
            f"{key}: {path} is not a directory (a finished run, an export or a local model directory; "
            f"teachers are never downloaded)"
        )
    status = p / "status.json"
    state = _run_state(status)
    if status.is_file() and not (p / "model" / "tuneforge.json").is_file():
        raise ConfigError(
            f"{key}: {path} is a run that has not finished (state: {state}); train it to the end or "
            f"point at a finished run"
        )
    if (p / "export.json").is_file():
        return "export"
    if (p / "model" / "tuneforge.json").is_file() or (p / "tuneforge.json").is_file():
        if status.is_file() and state not in ("completed", "unreadable"):
            raise ConfigError(f"{key}: {path} is a run whose state is '{state}', not completed")
        return "run"
    if (p / "config.json").is_file():
        return "model"
    raise ConfigError(f"{key}: {path} holds no model (no model/tuneforge.json, export.json or config.json)")


def teacher_task(path: str) -> str | None:
    """The task a tuneforge teacher (run or export) was trained for; None for a plain model directory."""
    import json
    from pathlib import Path

    p = Path(path)
    for meta in (p / "model" / "tuneforge.json", p / "tuneforge.json"):
        if meta.is_file():
            try:
                return json.loads(meta.read_text()).get("task")
            except (OSError, ValueError):
                return None
    return None


def check_teacher(cfg: RunConfig) -> None:
    """`distill.teacher` can teach this run: a finished run / export / model directory of the same task."""
    teacher = cfg.distill.teacher
    if teacher is None:
        return
    teacher_kind(teacher)
    task = teacher_task(teacher)
    if task is not None and task != cfg.task.type:
        raise ConfigError(
            f"distill.teacher: {teacher} is a '{task}' run; this run's task.type is "
            f"'{cfg.task.type}' (a teacher must do the same task)"
        )


def environment_errors(cfg: RunConfig) -> list[str]:
    """Every problem of the validated RunConfig `cfg` on this machine, one message each (empty when it can run)."""
    errors = []
    for check in (
        lambda: resolve_precision(cfg.train.precision),
        lambda: resolve_report_to(cfg.train.report_to),
        lambda: check_levers(cfg.train),
        lambda: check_teacher(cfg),
        lambda: check_distributed(cfg.train),
    ):
        try:
            check()
        except ConfigError as exc:
            errors.append(str(exc))
    return errors
