"""A shared pretrained backbone with one classification head per sub-task (`task.type: multitask`).

`MultiTaskModel` is loaded and saved like a transformers model, so every method's contract applies to it
unchanged: `from_pretrained(dir, dtype=..., multitask=spec)` (the base model, or a saved multi-task model),
`save_pretrained(dir)` (the backbone as a transformers checkpoint whose config.json carries the head spec under
`tuneforge_multitask`, and the heads in multitask_heads.safetensors), `from_config(config)`. The heads and the
learned loss weights are top-level modules (`task_heads`, `task_weighting`), so methods find them as the task's
head modules (trained in full; PEFT keeps them as modules_to_save), while the backbone sits under `encoder`.

The forward pass pools one vector per text (`task.pooling`; by default the mean over the real tokens for encoders
and the last real token for decoders), runs every head on it and returns their logits side by side (see
tuneforge.kernels.multitask for the layout and the loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from tuneforge.config.environment import model_width
from tuneforge.errors import ModelError
from tuneforge.kernels.multitask import HeadLayout, multitask_loss

HEADS_FILE = "multitask_heads.safetensors"
CONFIG_KEY = "tuneforge_multitask"


def layouts(spec: dict) -> list[HeadLayout]:
    return [HeadLayout(h["name"], int(h["num_labels"]), bool(h.get("multi_label"))) for h in spec["heads"]]


def pooling_for(encoder: nn.Module) -> str:
    """`last` for a decoder (its last real token has seen the whole text), else `mean` (over the real tokens).

    Mean rather than the first ([CLS]) token: on MiniLM with LoRA (benchmarks/multitask.py, seed 42), heads on
    BERT's pooled [CLS] output learned the easy sub-task (subjectivity 0.993) and left polarity at the majority class
    (0.576), while heads on the mean reached 0.997 and 0.798 (the single-task polarity run: 0.777). `task.pooling`
    chooses another."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(encoder.config, "model_type", "")
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "last"
    return "mean"


def hidden_size(config) -> int:
    width = model_width(config)
    if width is not None:
        return width
    raise ModelError(f"cannot tell the hidden size of a {getattr(config, 'model_type', '?')} model for its task heads")


class TaskHeads(nn.Module):
    """One small classifier per sub-task on the pooled vector; forward returns their logits side by side."""

    def __init__(self, hidden: int, widths: list[int], dropout: float, init_std: float):
        """Each head: dropout, dense + tanh, dropout, linear (RoBERTa's classification head), so every sub-task
        has a pooling layer of its own on the shared pooled vector."""
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, w)
            )
            for w in widths
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=init_std)
                nn.init.zeros_(m.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(pooled) for h in self.heads], dim=-1)


class UncertaintyWeights(nn.Module):
    """The learned s_i = log sigma_i^2 of uncertainty weighting, one per sub-task, starting at 0 (weight 1).
    Read through forward() so that PEFT's modules_to_save copy is the one used."""

    def __init__(self, n: int):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n))

    def forward(self) -> torch.Tensor:
        return self.log_vars


class MultiTaskModel(nn.Module):
    base_model_prefix = "encoder"
    accepts_loss_kwargs = False  # the loss is a batch mean: the Trainer divides it for accumulation
    supports_gradient_checkpointing = True
    _keys_to_ignore_on_save = None

    def __init__(self, encoder: nn.Module, spec: dict):
        """`spec`: {"heads": [{"name", "num_labels", "multi_label"}], "weights": [...], "weighting":
        fixed|uncertainty, "pooling": mean|first|last|auto (absent or auto: `pooling_for` the backbone)}."""
        super().__init__()
        self.encoder = encoder
        spec = {
            **spec,
            "pooling": spec.get("pooling") if spec.get("pooling") not in (None, "auto") else pooling_for(encoder),
        }
        self.spec = spec
        self.config = encoder.config
        setattr(self.config, CONFIG_KEY, spec)
        self.layouts = layouts(spec)
        cfg = self.config
        dropout = next(
            (
                float(getattr(cfg, k))
                for k in ("classifier_dropout", "hidden_dropout_prob", "dropout")
                if isinstance(getattr(cfg, k, None), (int, float))
            ),
            0.1,
        )
        self.task_heads = TaskHeads(
            hidden_size(cfg),
            [h.width for h in self.layouts],
            dropout,
            float(getattr(cfg, "initializer_range", 0.02) or 0.02),
        )
        if isinstance(getattr(encoder, "pooler", None), nn.Module):
            # the heads pool for themselves: BERT's pooler would only cost time (and train for nothing)
            encoder.pooler = None
        self.task_weighting = UncertaintyWeights(len(self.layouts)) if spec.get("weighting") == "uncertainty" else None
        self.register_buffer(
            "loss_weights",
            torch.tensor([float(w) for w in spec.get("weights") or [1.0] * len(self.layouts)]),
            persistent=False,
        )

    # ---- what methods and the Trainer call on a transformers model -------------------------------------
    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def get_output_embeddings(self):
        return None

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None):
        self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self):
        self.encoder.gradient_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        enc = self.encoder
        return bool(
            getattr(enc, "is_activation_checkpointing", None)
            if hasattr(enc, "is_activation_checkpointing")
            else getattr(enc, "is_gradient_checkpointing", False)
        )

    def enable_input_require_grads(self):
        self.encoder.enable_input_require_grads()

    @property
    def is_loaded_in_4bit(self) -> bool:
        return bool(getattr(self.encoder, "is_loaded_in_4bit", False))

    @property
    def is_loaded_in_8bit(self) -> bool:
        return bool(getattr(self.encoder, "is_loaded_in_8bit", False))

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- forward ----------------------------------------------------------------------------------------
    def pool(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        kw: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kw).last_hidden_state
        if self.spec["pooling"] == "mean":
            mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).unsqueeze(-1)
            mask = mask.to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.spec["pooling"] == "last":
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
            last = (pos * mask.long()).argmax(dim=1)  # the last real token, with left or right padding
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return hidden[:, 0]

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None
    ) -> SequenceClassifierOutput:
        pooled = self.pool(input_ids, attention_mask, token_type_ids)
        head = next(self.task_heads.parameters(), None)  # none after dynamic int8 quantization
        logits = self.task_heads(pooled.to(head.dtype) if head is not None and head.is_floating_point() else pooled)
        loss = None
        if labels is not None:
            log_vars = self.task_weighting() if self.task_weighting is not None else None
            loss = multitask_loss(logits, labels, self.layouts, self.loss_weights, log_vars)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    # ---- loading and saving -----------------------------------------------------------------------------
    def _own_state(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def save_pretrained(self, out_dir: str, safe_serialization: bool = True, **kwargs) -> None:
        from safetensors.torch import save_file

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(out_dir, safe_serialization=True, **kwargs)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self._own_state().items()}, str(Path(out_dir) / HEADS_FILE)
        )

    @classmethod
    def from_pretrained(
        cls, path: str, dtype=None, trust_remote_code: bool = False, multitask: dict | None = None, **kwargs
    ) -> MultiTaskModel:
        """The backbone from `path` (a base model, or a directory `save_pretrained` wrote) with the heads of
        `multitask` (else the spec in its config.json); heads saved beside it are loaded.
        Raises ModelError when neither gives a head spec."""
        from transformers import AutoModel

        kw = {"dtype": dtype} if dtype is not None else {}
        encoder = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code, **kw, **kwargs)
        spec = multitask or getattr(encoder.config, CONFIG_KEY, None)
        if not spec:
            raise ModelError(f"{path} is not a tuneforge multi-task model (its config.json has no {CONFIG_KEY})")
        model = cls(encoder, spec)
        heads = Path(path) / HEADS_FILE
        if Path(path).is_dir() and heads.is_file():
            from safetensors.torch import load_file

            state = load_file(str(heads))
            missing = set(model._own_state()) - set(state)
            if missing:
                raise ModelError(f"{heads} lacks {sorted(missing)[:3]}: the saved heads do not match the spec")
            model.load_state_dict(state, strict=False)
        return model

    @classmethod
    def from_config(cls, config, **kwargs) -> MultiTaskModel:
        from transformers import AutoModel

        spec = getattr(config, CONFIG_KEY, None)
        if not spec:
            raise ModelError("the config is not a tuneforge multi-task model's (no tuneforge_multitask)")
        return cls(AutoModel.from_config(config, **kwargs), spec)
