"""The method contract: which parameters learn, and how they are saved, loaded and merged.

A method is one class registered under its name in METHODS, with its own pydantic `Config`
(nested under `method:` in the run config). The training engine only calls the hooks below;
it never asks which method it is running.

    apply(model, ctx)          -> model whose trainable parameters are the method's
    trainable_parameters(model)-> [(name, parameter)] that the optimizer updates
    param_groups(model, lr, wd)-> optimizer groups (layer-wise rates, no decay on norms/biases)
    save(model, dir, state_dict=None)
                               -> loadable artefacts (PEFT format for PEFT methods); `state_dict`: the full state
                                  dict gathered from a sharded model (FSDP / ZeRO-3), read instead of `model`'s
    supports_strategy(cfg, strategy)
                               -> None when the method can train under `train.distributed.strategy` (`ddp`, `fsdp`,
                                  `deepspeed`), else why not (one line; `load_config` reports it as a config error)
    load(dir, build_base)      -> the trained model again, given a builder of base models
    merge(model)               -> a plain transformers model, or MethodError if the method cannot merge
    load_kwargs(ctx)           -> extra `from_pretrained` arguments (for example a 4-bit quantization config
                                  that keeps ctx.full_precision_modules unquantized)
    callbacks(ctx)             -> Trainer callbacks the method needs (for example progressive unfreezing)
    speed_levers(model, train_cfg, cuda)
                               -> the method's own fast paths as resolved levers (LoRA: `train.fused_lora`);
                                  `training.speed.apply_speedups` prints them with the engine-wide ones
    disabled_adapters(model)   -> context manager: the model with the method's adapters switched off (the base
                                  model, for comparisons in evaluation), or None when the method cannot switch
                                  them off (the caller then loads the base model itself)

Serving several runs on one base model (`tuneforge serve RUN_A RUN_B`, tuneforge.inference.adapters) uses three
more hooks; a method that does not implement them has runs that load on their own (the default):

    shared_base_key(dir)       -> a hashable key when the adapter saved in `dir` can sit beside other adapters on
                                  one shared base model (runs with equal keys, base model and task may share), or
                                  None when the saved model stands alone (the whole model, or modules that
                                  cannot be switched per request)
    load_extra(model, dir, name)
                               -> load the adapter saved in `dir` into `model` (from `load` of a run with the same
                                  key) under `name`, beside the adapters it holds
    activate(model, name)      -> make adapter `name` (from `load_extra`, or `DEFAULT_ADAPTER` for the one `load`
                                  loaded) the one that computes

The memory estimate (tuneforge.training.estimate) builds the run's model on the `meta` device through the hooks
above and asks three more, so that it never asks which method runs:

    lighter_variants(cfg, device)
                               -> lists of config overrides that keep what is learned but need less memory on
                                  `device` ("cuda" or "cpu"); the advice re-estimates each when a run does not fit
                                  (LoRA on CUDA: the same adapters on a 4-bit base, `method.name=qlora`).
                                  Default: none
    config_for_switch(current) -> the `method:` section of a run switched to this method from `current` (the run's
                                  method config): the keys both methods have keep the run's values, except those
                                  whose defaults differ (they make this method what it is: qlora's
                                  `quantization: nf4`), which are left to this method's defaults
    adapter_module_names(model)-> names of the modules the method added inside the layers it wraps (after `apply`;
                                  LoRA: `lora_A`, `lora_B`, `lora_dropout`, ...): the estimate counts their
                                  activations with the wrapped layer, not as the model's own. Default: none
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from tuneforge.config.schema import MethodConfig, RunConfig
from tuneforge.errors import MethodError
from tuneforge.kernels.levers import NO_GPU, Lever, wanted
from tuneforge.registry import METHODS  # noqa: F401  (re-exported for the method modules)


@dataclass
class MethodContext:
    """What a method may need to know about the run, without knowing the task's internals.

    head_modules            modules that are new for the task and always train (`Task.head_modules(model)`,
                            known once the model is loaded)
    full_precision_modules  module names the task keeps out of quantization (its head, for example
                            `classifier` or `lm_head`); known before the model is loaded, so `load_kwargs`
                            can use it. Empty: the task does not say (see `load_kwargs` of the method)
    gradient_checkpointing  the run's `train.gradient_checkpointing`
    new_token_ids           ids of tokens the run added to the base's vocabulary (model.extend_vocabulary,
                            add_tokens): their embedding rows (and an untied output layer's) must train
    train_embeddings        `new`: only those rows train; `all`: the whole embedding matrix (model.train_embeddings)
    """

    head_modules: list[str] = field(default_factory=list)
    full_precision_modules: tuple[str, ...] = ()
    gradient_checkpointing: bool = False
    new_token_ids: list[int] = field(default_factory=list)
    train_embeddings: str = "new"


#: the name under which `Method.load` leaves a run's adapter, for `Method.activate`
DEFAULT_ADAPTER = "default"

NO_DECAY_MARKERS = ("bias", "norm", "ln_", "layernorm", "layer_norm", "rmsnorm")


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    lname = name.lower()
    return param.ndim < 2 or any(m in lname for m in NO_DECAY_MARKERS)


class Method:
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    can_merge: ClassVar[bool] = False
    #: whether `save` writes every weight of the model (not only the method's own on top of the base's), so a
    #: run can start from random weights (`model.random_init`) and still load back exactly
    saves_whole_model: ClassVar[bool] = False
    #: whether `apply` trains (and `save` keeps) the embedding rows of tokens added to the vocabulary
    #: (MethodContext.new_token_ids); a method that cannot is refused for a run that adds tokens
    trains_new_tokens: ClassVar[bool] = False
    #: a sentence for `tuneforge methods` and the docs
    summary: ClassVar[str] = ""

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        """Set keys the user left at their default to what this method needs (never a key the user set)."""

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Cross-field checks: raise ConfigError naming the key when the method cannot apply."""

    @classmethod
    def supports_strategy(cls, cfg: RunConfig, strategy: str) -> str | None:
        """None when this method (as `cfg.method` configures it) trains under the multi-process `strategy`
        (`ddp`, `fsdp`, `deepspeed`; the stage is `cfg.train.distributed.deepspeed.stage`), else the reason, one
        clause naming the method key that prevents it. Default: every strategy works (the method's parameters are
        ordinary ones that DDP averages and FSDP / ZeRO shard)."""
        return None

    @classmethod
    def lighter_variants(cls, cfg: RunConfig, device: str) -> list[list[str]]:
        """Override lists (`key=value`) that keep what the run `cfg` learns but need less memory on `device`
        ("cuda" or "cpu"), for the memory estimate's advice. Default: none."""
        return []

    @classmethod
    def config_for_switch(cls, current: MethodConfig) -> dict[str, Any]:
        """The `method:` section (JSON values) of a run switched to this method from `current`, its present method
        config: the keys both configs have keep their values, except those whose defaults differ (they make this
        method what it is), which are left out so that they take this method's defaults; `name` is this method's."""
        mine, theirs = cls.Config.model_fields, type(current).model_fields
        values = current.model_dump(mode="json")
        kept = {
            k: v
            for k, v in values.items()
            if k != "name"
            and k in mine
            and k in theirs
            and mine[k].get_default(call_default_factory=True) == theirs[k].get_default(call_default_factory=True)
        }
        return {**kept, "name": cls.name}

    def adapter_module_names(self, model: nn.Module) -> list[str]:
        """Names in `model` (after `apply`) of the modules the method added inside the layers it wraps (its adapters'
        weights and dropout), which the memory estimate counts with the wrapped layer. Default: none."""
        return []

    def load_kwargs(self, ctx: MethodContext | None = None) -> dict[str, Any]:
        """Extra `from_pretrained` arguments for the base model. `ctx` (head_modules not known yet) says which
        modules the task keeps in full precision; None: a caller that does not know the task."""
        return {}

    def apply(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        decay, no_decay = [], []
        for name, param in self.trainable_parameters(model):
            (no_decay if is_no_decay(name, param) else decay).append(param)
        groups = [
            {"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def callbacks(self, ctx: MethodContext) -> list:
        return []

    def speed_levers(self, model: nn.Module, train_cfg, cuda: bool) -> list[Lever]:
        """The method's own fast paths, switched on in place (after `apply`) and returned as resolved levers.

        Args:
            model: the model after `apply`.
            train_cfg: the run's `train` section.
            cuda: whether a CUDA device is there (`auto` levers are on only then).
        Raises ConfigError for an explicit `true` that cannot apply.

        Default: no fused path. `train.fused_lora` (a key of every run) resolves as for any model without
        LoRA layers: off, with the reason; an explicit `true` is not an error (as it never was)."""
        value = train_cfg.fused_lora
        on, note = wanted(value, "fused_lora", cuda or value is True, NO_GPU)
        return [Lever("fused_lora", False, "off: the model has no LoRA layers" if on else note)]

    @contextlib.contextmanager
    def disabled_adapters(self, model: nn.Module) -> Iterator[nn.Module | None]:
        """`with method.disabled_adapters(model) as base:` the model computing as its base model (adapters
        switched off, restored on exit), or None when the method has no adapter to switch off (the caller
        then loads the base model itself). Default: None."""
        yield None

    def save(self, model: nn.Module, out_dir: str, state_dict: dict | None = None) -> None:
        """Write the trained model into `out_dir`. `state_dict`: the whole model's full state dict (gathered by
        the engine from a sharded FSDP / ZeRO-3 model, whose own parameters are shards); None: read `model`."""
        raise NotImplementedError

    def load(self, in_dir: str, build_base: Callable[[str], nn.Module]) -> nn.Module:
        raise NotImplementedError

    def merge(self, model: nn.Module) -> nn.Module:
        raise MethodError(f"method '{self.name}' cannot be merged into the base model")

    def shared_base_key(self, in_dir: str) -> Hashable | None:
        """A key when the adapter saved in `in_dir` can share its base model with other runs' adapters (`load_extra`
        into a model loaded by a run with an equal key, the same base model and task); None when the saved model
        stands alone. Default: None."""
        return None

    def load_extra(self, model: nn.Module, in_dir: str, name: str) -> None:
        """Load the adapter saved in `in_dir` into `model` under `name`, beside the adapters it holds (`model` came
        from `load` of a run whose `shared_base_key` is equal to this one's).
        Raises MethodError when the method cannot (the default)."""
        raise MethodError(f"method '{self.name}' cannot load its model as an extra adapter on a shared base model")

    def activate(self, model: nn.Module, name: str) -> None:
        """Make adapter `name` (from `load_extra`, or DEFAULT_ADAPTER) the one that computes in `model`.
        Raises MethodError when the method cannot switch adapters (the default)."""
        raise MethodError(f"method '{self.name}' cannot switch between adapters")


def count_parameters(model: nn.Module, trainable: list[tuple[str, nn.Parameter]]) -> dict:
    """Trainable and total parameter counts. 4-bit weights count as their unpacked size."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        if getattr(p, "quant_state", None) is not None or p.dtype == torch.uint8:
            n *= 2  # two 4-bit values per stored byte
        total += n
    n_train = sum(p.numel() for _, p in {id(p): (n, p) for n, p in trainable}.values())
    return {
        "trainable_params": n_train,
        "total_params": total,
        "trainable_percent": round(100.0 * n_train / max(total, 1), 4),
    }
