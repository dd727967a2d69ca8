"""What every PEFT-backed method shares: the PEFT task type, wrapping, saving in PEFT's own format (so stock
`PeftModel.from_pretrained` loads it), loading, and merging. Each method only builds its PEFT config."""
from __future__ import annotations

import contextlib
from typing import Callable, ClassVar, Iterator

from torch import nn

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.methods.base import Method, MethodContext, MethodError

#: PEFT task type per transformers auto class: it decides the PeftModel subclass (forward signature,
#: generation, and which head modules PEFT itself keeps trainable)
PEFT_TASK_TYPES = {"AutoModelForSequenceClassification": "SEQ_CLS", "AutoModelForCausalLM": "CAUSAL_LM",
                   "AutoModelForTokenClassification": "TOKEN_CLS", "AutoModelForSeq2SeqLM": "SEQ_2_SEQ_LM",
                   "AutoModelForQuestionAnswering": "QUESTION_ANS"}


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


class PeftMethod(Method):
    """Base of the methods implemented by PEFT. Subclasses implement `peft_config(model, ctx)`."""

    #: whether the method needs a PEFT task type (prompt-style methods do: they change the inputs)
    needs_task_type: ClassVar[bool] = False

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        if cls.needs_task_type and task_peft_type(cfg.task.type) is None:
            ok = ", ".join(sorted(PEFT_TASK_TYPES.values()))
            raise ConfigError(f"method.name: '{cls.name}' does not support task '{cfg.task.type}' "
                              f"(PEFT supports it for model types {ok})")

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
            raise MethodError(f"method '{self.name}' does not support {type(model).__name__} (PEFT needs a "
                              f"sequence-classification or causal-LM model for it)")
        model = self.prepare(model, ctx)
        config = self.peft_config(model, ctx)
        try:
            return get_peft_model(model, config)
        except (ValueError, TypeError, KeyError) as exc:  # PEFT: target modules not found, unsupported model...
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"method ({self.name}): {msg[:300]}") from None

    @contextlib.contextmanager
    def disabled_adapters(self, model: nn.Module) -> Iterator[nn.Module | None]:
        """PEFT's own switch (`PeftModel.disable_adapter()`): the wrapped model computes as its base model;
        None for a model PEFT did not wrap (prefix tuning's own encoder path)."""
        if not hasattr(model, "disable_adapter"):
            yield None
            return
        with model.disable_adapter():
            yield model

    def save(self, model: nn.Module, out_dir: str) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, in_dir: str, build_base: Callable[[str], nn.Module]) -> nn.Module:
        from peft import PeftModel

        from tuneforge.models.loader import read_run_metadata
        base = build_base(read_run_metadata(in_dir)["base_model"])
        return PeftModel.from_pretrained(base, in_dir)

    def merge(self, model: nn.Module) -> nn.Module:
        if not self.can_merge:
            raise MethodError(f"method '{self.name}' cannot be merged into the base model")
        return model.merge_and_unload()
