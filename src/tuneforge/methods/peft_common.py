"""What every PEFT-backed method shares: the PEFT task type, wrapping, saving in PEFT's own format (so stock
`PeftModel.from_pretrained` loads it), loading, and merging. Each method only builds its PEFT config.

Several runs on one base model (`Method.shared_base_key` / `load_extra` / `activate`): adapters saved by PEFT
(`adapter_config.json`) share a base when their PEFT type and task type and the base's load settings (for example a
4-bit quantization) are equal; `load_extra` is PEFT's multi-adapter `load_adapter`, after resizing this adapter's
copies of the task head (PEFT's `modules_to_save`) to the saved shapes, so runs with different label counts share
one base; `activate` is PEFT's `set_adapter`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError, MethodError, first_line
from tuneforge.methods.base import Method, MethodContext

#: PEFT task type per transformers auto class: it decides the PeftModel subclass (forward signature,
#: generation, and which head modules PEFT itself keeps trainable)
PEFT_TASK_TYPES = {
    "AutoModelForSequenceClassification": "SEQ_CLS",
    "AutoModelForCausalLM": "CAUSAL_LM",
    "AutoModelForTokenClassification": "TOKEN_CLS",
    "AutoModelForSeq2SeqLM": "SEQ_2_SEQ_LM",
    "AutoModelForQuestionAnswering": "QUESTION_ANS",
}


def peft_task_type(model: nn.Module) -> str | None:
    """PEFT's task type for a loaded transformers model, from its class (…ForSequenceClassification ->
    SEQ_CLS, …ForCausalLM -> CAUSAL_LM); None for other classes."""
    for cls in type(model).__mro__:
        for auto, task_type in PEFT_TASK_TYPES.items():
            if cls.__name__.endswith(auto.removeprefix("AutoModel")):
                return task_type
    return None


def task_peft_type(task_name: str) -> str | None:
    """PEFT's task type for a registered task (by the task's auto class), for config-time checks."""
    from tuneforge.registry import TASKS

    return PEFT_TASK_TYPES.get(TASKS.get(task_name).auto_class_name)


def heads_or_none(ctx: MethodContext) -> list[str] | None:
    """The task's head modules for PEFT's modules_to_save (None when the task adds no head)."""
    return list(ctx.head_modules) or None


def embedding_names(model: nn.Module) -> list[str]:
    """Module names of the input embedding and, when it has its own weights (not tied to the input's), the output
    embedding (a causal LM's lm_head)."""
    names = {id(m): n for n, m in model.named_modules()}
    inp, out = model.get_input_embeddings(), getattr(model, "get_output_embeddings", lambda: None)()
    found = [names[id(inp)]] if inp is not None and id(inp) in names else []
    if out is not None and id(out) in names and out.weight is not getattr(inp, "weight", None):
        found.append(names[id(out)])
    return found


def new_token_training(model: nn.Module, ctx: MethodContext) -> tuple[dict[str, list[int]] | None, list[str]]:
    """How the rows of tokens added to the vocabulary train under a PEFT method: (PEFT's `trainable_token_indices`,
    modules for `modules_to_save`). `train_embeddings: new`: only the new rows (PEFT's trainable tokens keep a copy of
    those rows alone, saved with the adapter; a tied output layer follows the input embedding); `all`: the whole
    embedding matrices as trained copies (modules_to_save: one more copy of each in memory and in the checkpoint)."""
    if not ctx.new_token_ids:
        return None, []
    names = embedding_names(model)
    if ctx.train_embeddings == "all":
        return None, names
    return {n: list(ctx.new_token_ids) for n in names}, []


class PeftMethod(Method):
    """Base of the methods implemented by PEFT. Subclasses implement `peft_config(model, ctx)`."""

    #: whether the method needs a PEFT task type (prompt-style methods do: they change the inputs)
    needs_task_type: ClassVar[bool] = False

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        if cls.needs_task_type and task_peft_type(cfg.task.type) is None:
            ok = ", ".join(sorted(PEFT_TASK_TYPES.values()))
            raise ConfigError(
                f"method.name: '{cls.name}' does not support task '{cfg.task.type}' "
                f"(PEFT supports it for model types {ok})"
            )

    def peft_config(self, model: nn.Module, ctx: MethodContext):
        raise NotImplementedError

    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        """Hook before wrapping (LoRA prepares a quantized base here)."""
        if ctx.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        return model

    def apply(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        from peft import get_peft_model

        if self.needs_task_type and peft_task_type(model) is None:
            raise MethodError(
                f"method '{self.name}' does not support {type(model).__name__} (PEFT needs a "
                f"sequence-classification or causal-LM model for it)"
            )
        model = self.prepare(model, ctx)
        config = self.peft_config(model, ctx)
        try:
            model = get_peft_model(model, config)
        except (ValueError, TypeError, KeyError) as exc:  # PEFT: target modules not found, unsupported model...
            raise ConfigError(f"method ({self.name}): {first_line(exc, 300)}") from None
        if ctx.new_token_ids:
            self.keep_checkpoints_small(model)
        return model

    @contextlib.contextmanager
    def disabled_adapters(self, model: nn.Module) -> Iterator[nn.Module | None]:
        """PEFT's own switch (`PeftModel.disable_adapter()`): the wrapped model computes as its base model;
        None for a model PEFT did not wrap (prefix tuning's own encoder path)."""
        if not hasattr(model, "disable_adapter"):
            yield None
            return
        with model.disable_adapter():
            yield model

    def save(self, model: nn.Module, out_dir: str, state_dict: dict | None = None) -> None:
        # PEFT picks the adapter's (and modules_to_save's) entries out of a full state dict
        model.save_pretrained(
            out_dir, safe_serialization=True, **({"state_dict": state_dict} if state_dict is not None else {})
        )

    @staticmethod
    def keep_checkpoints_small(model: nn.Module) -> None:
        """For a model with PEFT trainable tokens on a resized embedding: every save (the run's model and the
        Trainer's checkpoints) keeps the adapter's rows only. PEFT's default (`save_embedding_layers="auto"`) sees
        the vocabulary size differ from the base's config and saves the whole embedding matrices as well; the
        loader rebuilds them from the base and the saved tokenizer (models/vocabulary_setup.py)."""
        import functools

        model.save_pretrained = functools.partial(model.save_pretrained, save_embedding_layers=False)

    def load(self, in_dir: str, build_base: Callable[[str], nn.Module]) -> nn.Module:
        from peft import PeftModel

        from tuneforge.models.loader import read_run_metadata

        base = build_base(read_run_metadata(in_dir)["base_model"])
        return PeftModel.from_pretrained(base, in_dir)

    def merge(self, model: nn.Module) -> nn.Module:
        if not self.can_merge:
            raise MethodError(f"method '{self.name}' cannot be merged into the base model")
        return model.merge_and_unload()

    # ---- several adapters on one base model (tuneforge.inference.adapters) --------------------------------------
    def shared_base_key(self, in_dir: str) -> Hashable | None:
        """(PEFT type, PEFT task type, the base's load settings) for an adapter PEFT saved; None for a model saved
        otherwise (prefix tuning's own encoder path)."""
        config = Path(in_dir, "adapter_config.json")
        if not config.is_file():
            return None
        saved = json.loads(config.read_text())
        load = sorted((k, repr(v)) for k, v in self.load_kwargs().items())
        return ("peft", saved.get("peft_type"), saved.get("task_type"), repr(load))

    def load_extra(self, model: nn.Module, in_dir: str, name: str) -> None:
        """PEFT's `add_adapter` + `load_adapter` under `name`; the adapter's copies of the head modules are first
        resized to the saved shapes (a 3-label head beside a base built with 2 labels).
        Raises MethodError when PEFT cannot add it (the adapter is removed again)."""
        from peft import PeftConfig
        from peft.utils import load_peft_weights

        if not hasattr(model, "load_adapter") or not hasattr(model, "peft_config"):
            raise MethodError(f"{in_dir}: the shared model is not a PEFT model; cannot add this adapter to it")
        if name in model.peft_config:
            raise MethodError(f"an adapter named '{name}' is already loaded")
        device = next(model.parameters()).device
        try:
            config = PeftConfig.from_pretrained(in_dir)
            config.inference_mode = True
            model.add_adapter(name, config)
            _fit_saved_modules(model, name, load_peft_weights(in_dir, device="cpu"))
            model.load_adapter(in_dir, adapter_name=name, torch_device=str(device))
        except (ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:
            first = first_line(exc, 300)
            if name in getattr(model, "peft_config", {}):
                with contextlib.suppress(Exception):
                    model.delete_adapter(name)
            raise MethodError(f"{in_dir}: cannot load this adapter beside the others: {first}") from None
        model.eval()

    def activate(self, model: nn.Module, name: str) -> None:
        """PEFT's `set_adapter` (frozen). Raises MethodError for a model PEFT did not wrap or an unknown name."""
        if not hasattr(model, "set_adapter") or name not in getattr(model, "peft_config", {}):
            raise MethodError(f"no adapter '{name}' in this model")
        if getattr(model, "active_adapter", None) == name:
            return
        try:
            model.set_adapter(name, inference_mode=True)
        except TypeError:  # PEFT before `inference_mode`
            model.set_adapter(name)


def _fit_saved_modules(model: nn.Module, name: str, weights: dict[str, torch.Tensor]) -> None:
    """Give adapter `name`'s copies of fully trained modules (PEFT's modules_to_save, for example a classification
    head) the shapes of the saved weights, where they differ from the shared base's module (another label count)."""
    from peft.utils import ModulesToSaveWrapper

    for wrapper_name, wrapper in model.named_modules():
        if not isinstance(wrapper, ModulesToSaveWrapper) or name not in wrapper.modules_to_save:
            continue
        copy = wrapper.modules_to_save[name]
        for param_name, param in list(copy.named_parameters()):
            saved = weights.get(f"{wrapper_name}.{param_name}")
            if saved is None or tuple(saved.shape) == tuple(param.shape):
                continue
            owner_name, _, leaf = param_name.rpartition(".")
            owner = copy.get_submodule(owner_name) if owner_name else copy
            setattr(
                owner,
                leaf,
                nn.Parameter(torch.empty(saved.shape, dtype=param.dtype, device=param.device), requires_grad=False),
            )
            if isinstance(owner, nn.Linear) and leaf == "weight":
                owner.out_features, owner.in_features = saved.shape[0], saved.shape[1]
