"""The teacher of a distillation run (`distill.teacher`): a finished run (adapters applied), an export, or a
local model directory of the same task, loaded once, with what the task's distillation hooks need from it
(outputs over texts with the teacher's own tokenizer, its label names, a fingerprint for caching, its size).

The engine loads it and hands it to the task (`Task.distill`), so the task never imports this layer."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tuneforge.config.environment import teacher_kind
from tuneforge.errors import ConfigError, ModelError, first_line

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

log = logging.getLogger("tuneforge")


@dataclass
class Teacher:
    path: str
    run: Any  # a LoadedRun: .model, .tokenizer, .meta, .model_dir
    task: Any  # the task class (same task as the student's)

    @property
    def labels(self) -> list[str]:
        return list(self.run.meta.get("labels") or [])

    @property
    def model(self):
        return self.run.model

    @property
    def tokenizer(self):
        return self.run.tokenizer

    def parameters(self) -> int:
        return sum(p.numel() for p in self.run.model.parameters())

    def size_mb(self) -> float | None:
        from tuneforge.evaluation.speed import dir_size_mb

        return dir_size_mb(self.run.model_dir)

    def fingerprint(self) -> str:
        """Changes when the teacher's files change (path, names, sizes and modification times)."""
        h = hashlib.sha256(str(Path(self.path).resolve()).encode())
        root = Path(self.run.model_dir)
        for f in sorted(root.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    chat: Any = None  # a models.generation.ChatModel for teachers that chat (template, stop tokens)

    def answers(self, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
        """The teacher's greedy answers to `prompts` (message lists ending with a user turn), with its own chat
        template, system prompt and stop tokens."""
        from tuneforge.models.generation import generate

        return [
            a["response"] for a in generate(self.chat, prompts, {"temperature": 0.0, "max_new_tokens": max_new_tokens})
        ]

    def logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """The teacher's outputs for `texts`, tokenized with its own tokenizer (per example, so teacher and
        student may differ in tokenizer and architecture)."""
        return self.task.inference.logits(self.run, texts, pairs, batch_size)


def load_teacher(cfg: RunConfig, task_cls, device: str | None = None) -> Teacher:
    """Load `cfg.distill.teacher` for a run of task `task_cls`. Raises ConfigError/ModelError in one line when
    it cannot teach (missing, unfinished, another task, not loadable)."""
    from tuneforge.inference import LoadedRun, load_run
    from tuneforge.models.loader import load_model

    path = cfg.distill.teacher
    kind = teacher_kind(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if task_cls.inference.interface == "chat":
        # a chat teacher loads with what chatting needs: its template, system prompt and stop tokens
        from tuneforge.generation import load_chat_model
        from tuneforge.models.loader import read_run_metadata

        cm = load_chat_model(path, device=device)
        meta = {"task": task_cls.name}
        if kind == "run":
            from tuneforge.inference import model_dir_of

            meta = read_run_metadata(model_dir_of(path))
        model_dir = Path(path) / "model" if (Path(path) / "model").is_dir() else Path(path)
        log.info("distillation teacher: %s (%s)", path, kind)
        return Teacher(
            path, LoadedRun(model=cm.model, tokenizer=cm.tokenizer, meta=meta, model_dir=model_dir), task_cls, chat=cm
        )
    if kind in ("run", "export"):
        run = load_run(path, device=device, precision="fp32")  # its logits are cached: kept exact
        if run.meta.get("task") != task_cls.name:
            raise ConfigError(
                f"distill.teacher: {path} is a '{run.meta.get('task')}' run; this run's task.type is '{task_cls.name}'"
            )
    else:
        try:
            model = load_model(path, task_cls.auto_class(), "float32", cfg.model.trust_remote_code)
        except Exception as exc:
            raise ModelError(
                f"distill.teacher: {path} does not load as a {task_cls.auto_class_name}: {first_line(exc)}"
            ) from None
        id2label = getattr(model.config, "id2label", None) or {}
        meta = {
            "task": task_cls.name,
            "labels": [str(id2label[i]) for i in sorted(id2label)],
            "max_length": cfg.data.max_length,
        }
        model.eval().to(device)
        run = LoadedRun(
            model=model,
            tokenizer=task_cls.inference.load_processor(path, cfg.model.trust_remote_code),
            meta=meta,
            model_dir=Path(path),
        )
    log.info("distillation teacher: %s (%s)", path, kind)
    return Teacher(path, run, task_cls)
