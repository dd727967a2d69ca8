"""Instruction / chat fine-tuning (SFT) and continued pre-training of causal LMs (AutoModelForCausalLM).

Records (alpaca, sharegpt, messages, text) become conversations, are rendered with a chat template that is
checked against the tokenizer before training, and are trained with the loss on assistant turns only (each
including its end-of-turn token, so the tuned model stops). The template, system prompt and stop tokens are
saved with the model, so `tuneforge chat` / `generate` talk to it exactly as it was trained.

Parsing the formats, templating, encoding and packing are in data/ (sft_formats, templates, sft_encode,
packing), the data report in data/sft_report; reading and splitting the records and assembling the encoded
splits in tasks/sft_prepare, the final evaluation in tasks/sft_eval, distillation in tasks/sft_distill, and how a
finished run chats and exports in tasks/causal_lm_hooks. What stays here is the task itself: its config and data
keys (a third of the module), the chat template check, how preparation is put together and the training hooks.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field
from torch import nn

from tuneforge.config.schema import DataSection, RunConfig, Section, TaskConfig
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.base import TASKS, Prepared, Task
from tuneforge.tasks.causal_lm_hooks import ChatInference, LMExports
from tuneforge.tasks.sft_prepare import SFTState, assemble, read_split

log = logging.getLogger("tuneforge")


class CausalLMData(DataSection):
    """`data:` keys of causal_lm runs: the record format, the chat template and how examples become rows."""

    format: Literal["auto", "alpaca", "sharegpt", "messages", "text"] = Field(
        "auto",
        description=(
            "SFT record format: `alpaca` (instruction/input/output, optional system/history), `sharegpt` "
            "(conversations of from/value), `messages` (OpenAI-style role/content lists), `text` (plain continued "
            "pre-training on `text_column`), `auto` (detected from the columns)."
        ),
    )
    template: str = Field(
        "auto",
        description=(
            "Chat template (SFT): `auto` uses the tokenizer's own and needs one; a name (`chatml`, `llama3`, "
            "`alpaca`, `vicuna`) uses that template instead. The template used is saved with the model."
        ),
    )
    system_prompt: str | None = Field(
        None,
        description=(
            "System message added to every conversation that has none, in training and in chat (saved with the "
            "model). null: the template's own behaviour (some templates insert a default system prompt)."
        ),
    )
    variables: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Values for `{{name}}` placeholders in the SFT data and system prompt (for example the new name and "
            "author of `builtin:identity`)."
        ),
    )
    train_on_prompt: bool = Field(
        False,
        description=(
            "SFT: compute the loss on prompt tokens too. Default: on assistant turns only (each including its "
            "end-of-turn token)."
        ),
    )
    overflow: Literal["truncate", "drop", "split"] = Field(
        "truncate",
        description=(
            "SFT examples longer than `max_length`: `truncate` cuts them at max_length, `drop` leaves them out, "
            "`split` (data.format text only: continued pre-training) cuts a text into consecutive pieces of "
            "max_length tokens, each an example, so no token is lost. They are counted in the log and the run's "
            "eval/metrics.json."
        ),
    )
    packing: bool = Field(
        False,
        description=(
            "SFT: pack several examples into each row of up to `max_length` tokens; attention and positions restart "
            "at every example, so examples never see each other."
        ),
    )
    conversation_column: str | None = Field(
        None,
        description=("Column with the conversation for `sharegpt`/`messages` (default `conversations` / `messages`)."),
    )
    roles: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Role names of the data mapped to `system`/`user`/`assistant`, added to the known ones (human, user, "
            "gpt, assistant, bot, model, system), for example {customer: user, agent: assistant}."
        ),
    )


class GenerationSettings(Section):
    max_new_tokens: int = Field(256, ge=1, description="Longest answer, in tokens (chat/generate default).")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature; 0 decodes greedily.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling: smallest token set with this probability.")
    repetition_penalty: float = Field(1.0, gt=0.0, description="Penalty > 1 discourages repeating tokens (1 = off).")


class CausalLMConfig(TaskConfig):
    type: Literal["causal_lm"] = "causal_lm"
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings,
        description=(
            "Sampling defaults saved with the model for `tuneforge chat` and `generate` (flags override them)."
        ),
    )
    report_prompts: int = Field(
        4,
        ge=0,
        le=64,
        description=("Held-out prompts answered by the base and the tuned model, side by side, in eval/report.md."),
    )
    report_max_new_tokens: int = Field(128, ge=1, description="Longest answer in the report (greedy decoding).")
    compare_base: bool = Field(
        True,
        description=(
            "Also measure the base model's loss/perplexity and answers on the held-out split (LoRA-type methods "
            "switch the adapter off; others reload the base)."
        ),
    )


@TASKS.register("causal_lm")
class CausalLMTask(Task):
    name = "causal_lm"
    Config = CausalLMConfig
    DataConfig = CausalLMData
    auto_class_name = "AutoModelForCausalLM"
    distill_keys = ("divergence", "beta", "mode")
    aliases = ("sft",)
    report_metrics = ("loss", "perplexity")
    full_precision_modules = ("lm_head",)
    inference = ChatInference()
    exports = LMExports()
    default_metric = "loss"
    default_max_length = 1024
    metrics: ClassVar[dict[str, bool]] = {"loss": False, "perplexity": False}

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        if cfg.data.overflow == "split" and cfg.data.format != "text":
            raise ConfigError(
                "data.overflow: 'split' cuts plain text (data.format: text) into pieces; a conversation cut in "
                "pieces would lose its prompt, so use truncate or drop"
            )
        if cfg.data.format == "text" and (cfg.data.system_prompt or cfg.data.template != "auto"):
            raise ConfigError(
                "data.system_prompt / data.template: not used with data.format 'text' "
                "(plain continued pre-training has no chat template)"
            )

    def head_modules(self, model: nn.Module) -> list[str]:
        # no new head: lm_head is pretrained (and tied to the embeddings), so LoRA must not train it in full
        return []

    # ---- data -------------------------------------------------------------------------------------------
    def _base_stop_ids(self) -> list[int]:
        from transformers import GenerationConfig

        from tuneforge.models.loader import resolve_model

        try:
            gen = GenerationConfig.from_pretrained(resolve_model(self.cfg.model.name, self.cfg.model.revision))
        except (OSError, ValueError):
            return []
        ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        return [int(i) for i in ids if i is not None]

    def _template(self, tokenizer, fmt: str):
        """Resolve and check the chat template (set on the tokenizer, so it is saved with the model); returns
        (ChatFormat or None, system prompt). Raises ConfigError for a template problem unless `force`."""
        from tuneforge.data.templates import fill_variables, resolve_template

        d = self.cfg.data
        if tokenizer.pad_token_id is None:  # labels are built explicitly, so padding with eos is harmless
            tokenizer.pad_token = tokenizer.eos_token
        system_prompt = fill_variables(d.system_prompt, d.variables, "data.system_prompt") if d.system_prompt else None
        chat = None
        if fmt != "text" or tokenizer.chat_template:
            try:
                chat = resolve_template(tokenizer, d.template, self._base_stop_ids())
            except ConfigError:
                if fmt != "text":
                    raise
            if chat is not None and chat.problems:
                msg = "chat template check failed: " + "; ".join(chat.problems)
                if fmt != "text" and not self.force:
                    raise ConfigError(msg + " (tuneforge train --force trains anyway)")
                print(f"tuneforge: warning: {msg}", file=sys.stderr, flush=True)
            if chat is not None:
                tokenizer.chat_template = chat.jinja  # saved with the model: chat uses what training used
        return chat, system_prompt

    def _settings(self, fmt: str, chat, system_prompt):
        from tuneforge.data.sft_encode import EncodeSettings

        d = self.cfg.data
        return EncodeSettings(fmt, chat, system_prompt, d.max_length, d.overflow, d.train_on_prompt, self.force)

    def prepare(self, tokenizer) -> Prepared[SFTState]:
        from tuneforge.data.sft_encode import encode_records

        d = self.cfg.data
        recs = read_split(self.cfg)
        fmt, train, val, test = recs.fmt, recs.train, recs.validation, recs.test
        chat, system_prompt = self._template(tokenizer, fmt)
        settings = self._settings(fmt, chat, system_prompt)
        stats: dict = {}

        def enc(rs, name):
            return None if not rs else encode_records(rs, tokenizer, name, stats, settings)

        train_ds, val_ds, test_ds = enc(train, "train"), enc(val, "validation"), enc(test, "test")
        if train_ds is None:
            raise DataError(f"{d.train}: no training example is left after data.overflow={d.overflow}")
        state = SFTState(
            fmt,
            chat,
            system_prompt,
            self._stop_token_ids(tokenizer, chat),
            tokenizer.pad_token_id,
            [c for c in (test or val or []) if isinstance(c, list)][: self.cfg.task.report_prompts],
            stats.get("example"),
            recs,
        )
        prepared = assemble(self.cfg, train_ds, val_ds, test_ds, recs, state, stats)
        if stats.get("example"):
            log.info("first training example, trained tokens in [[...]]:\n%s", stats["example"])
        return prepared

    def held_out(self, run_dir, tokenizer):
        from tuneforge.data.sft_encode import encode_records
        from tuneforge.data.splits import load_split, saved_split, split_file

        saved = {name: load_split(run_dir, name) for name in ("test", "validation")}
        if not any(saved.values()):
            if saved_split(run_dir):
                return None, "validation"
            print(
                f"tuneforge: {run_dir} predates saved splits: re-creating its held-out split from config.yaml",
                file=sys.stderr,
                flush=True,
            )
            p = self.prepare(tokenizer)
            return (p.test, "test") if p.test is not None else (p.validation, "validation")
        name = "test" if saved["test"] else "validation"
        records = saved[name]
        fmt = "text" if all(isinstance(r, str) for r in records) else "messages"
        chat, system_prompt = self._template(tokenizer, fmt)
        log.info("held-out split from %s", split_file(run_dir, name))
        return encode_records(records, tokenizer, name, {}, self._settings(fmt, chat, system_prompt)), name

    # ---- distillation (tasks/sft_distill.py) ---------------------------------------------------------
    def distill(self, prepared: Prepared, tokenizer, teacher, cache_dir) -> Prepared:
        """`token`: the student matches the teacher's next-token distributions on the trained tokens (checked
        here: a shared vocabulary). `sequence`: the teacher answers the training prompts once (cached) and the
        student learns those answers with ordinary SFT, whatever the tokenizers."""
        from tuneforge.tasks.sft_distill import distill

        return distill(self, prepared, tokenizer, teacher, cache_dir)

    def training_loss(self, prepared: Prepared, without_adapters=None):
        from tuneforge.tasks.sft_distill import training_loss

        return training_loss(self.cfg, prepared)

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        from tuneforge.data.report import write_report

        name = prepared.info.get("template") or prepared.info.get("format")
        write_report(
            out_dir,
            prepared.report,
            prepared.lengths,
            self.cfg.data.max_length,
            title=f"SFT data report ({prepared.info.get('format')} records, template {name}; "
            f"lengths in tokens of the whole templated conversation)",
        )

    def _stop_token_ids(self, tokenizer, chat) -> list[int]:
        if chat is not None and chat.stop_token_ids:
            return list(chat.stop_token_ids)
        return list(dict.fromkeys([tokenizer.eos_token_id] + self._base_stop_ids()))

    # ---- training hooks ---------------------------------------------------------------------------------
    def collator(self, tokenizer):
        from tuneforge.data.packing import SFTCollator

        packed = SFTCollator(tokenizer.pad_token_id, packed=True)
        plain = SFTCollator(tokenizer.pad_token_id, packed=False)
        # packed training rows carry position_ids; evaluation rows are never packed
        return lambda features: (packed if "position_ids" in features[0] else plain)(features)

    def preprocess_logits(self, prepared: Prepared):
        """Reduce each batch's logits to per-row (summed NLL, target count): the full vocabulary logits of a
        whole split would not fit in memory."""
        import torch
        import torch.nn.functional as F

        def fn(logits, labels):
            if isinstance(logits, tuple):
                logits = logits[0]
            # prompt tuning prepends virtual tokens to the sequence: the logits of the real tokens are the last
            logits = logits[:, -labels.size(1) :]
            shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
            nll = F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)),
                shift_labels.reshape(-1),
                ignore_index=-100,
                reduction="none",
            ).view(shift_labels.shape)
            return torch.stack([nll.sum(1), (shift_labels != -100).sum(1).float()], dim=1)

        return fn

    def compute_metrics(self, prepared: Prepared):
        def fn(eval_pred):
            p = np.asarray(eval_pred.predictions, dtype=np.float64)
            tokens = p[:, 1].sum()
            nll = p[:, 0].sum() / max(tokens, 1.0)
            return {"perplexity": float(math.exp(min(nll, 50.0)))}

        return fn

    def use_fused_loss(self, model: nn.Module) -> str | None:
        """Training loss from the hidden states through the chunked linear + cross-entropy (evaluation keeps
        the model's own forward, whose logits the metrics need)."""
        from tuneforge.kernels.chunked_ce import chunked_loss_unsupported, use_chunked_loss

        reason = chunked_loss_unsupported(model)
        if reason is None:
            use_chunked_loss(model)
        return reason

    def final_evaluation(
        self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        from tuneforge.tasks.sft_eval import final_evaluation

        return final_evaluation(self.cfg, self.collator, trainer, prepared, eval_dir, val_metrics, without_adapters)

    # ---- artefacts --------------------------------------------------------------------------------------
    def metadata(self, prepared: Prepared) -> dict:
        i = prepared.info
        return {
            "format": i["format"],
            "template": i["template"],
            "end_of_turn_token": i["end_of_turn_token"],
            "system_prompt": i["system_prompt"],
            "stop_token_ids": i["stop_token_ids"],
            "generation": self.cfg.task.generation.model_dump(),
            "max_length": self.cfg.data.max_length,
        }

    def save_extras(self, model_dir: str, prepared: Prepared[SFTState]) -> None:
        """generation_config.json that stops on the template's end-of-turn token, for any loader of model/."""
        from transformers import GenerationConfig

        g = self.cfg.task.generation
        stops = prepared.state.stop_token_ids
        gen = GenerationConfig(
            eos_token_id=stops if len(stops) > 1 else stops[0],
            pad_token_id=prepared.state.pad_token_id if prepared.state.pad_token_id is not None else stops[0],
            do_sample=g.temperature > 0,
            temperature=g.temperature if g.temperature > 0 else None,
            top_p=g.top_p if g.temperature > 0 else None,
            max_new_tokens=g.max_new_tokens,
            repetition_penalty=g.repetition_penalty,
        )
        gen.save_pretrained(model_dir)
