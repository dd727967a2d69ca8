"""A finished preference run: it chats like an SFT run (tasks/causal_lm_hooks.ChatInference), and `tuneforge eval`
(and a search's best trial on its test split) measures it on held-out pairs: the loss, reward accuracy and margin,
against the run's reference (the adapters switched off where the run kept them, else a copy of its base or of
`task.reference_model`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from tuneforge.tasks.causal_lm_hooks import ChatInference, LMExports


def run_config(run: Any):
    """The validated config the run trained with (config.yaml beside model/)."""
    from tuneforge.config import load_config

    return load_config(str(Path(run.model_dir).parent / "config.yaml"))


class PreferenceInference(ChatInference):
    """Chat, and evaluation on preference pairs (`evaluate`)."""

    def evaluate(
        self, run: Any, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
    ) -> dict:
        """The run's loss, reward accuracy and margin on the pairs of `source` (any preference format the run's
        task reads; its own saved split by default), written to `out_dir`/metrics.json and report.md."""
        import torch

        from tuneforge.data.preference_encode import encode_pairs, encode_unpaired
        from tuneforge.errors import ConfigError, DataError
        from tuneforge.tasks.base import TASKS
        from tuneforge.tasks.preference_eval import SHOWN, write_report
        from tuneforge.tasks.preference_loss import PREDICTIONS, PreferenceLoss, kto_metrics, preference_metrics
        from tuneforge.tasks.preference_prepare import read_pairs

        if text_column or label_column:
            raise ConfigError("eval of a preference run: --text-column / --label-column do not apply (pairs are read)")
        cfg = run_config(run)
        cfg.data.format = "auto"  # the run's saved splits are in TRL's form, whatever the training files were
        task = TASKS.get(cfg.task.type)(cfg)
        tok = run.tokenizer
        settings = task._pair_settings(tok)
        kto = cfg.task.loss == "kto"
        _, records = read_pairs(cfg, source, "--data", tok, settings, [], {})
        data = (encode_unpaired if kto else encode_pairs)(records, tok, "eval", {}, settings)
        if data is None:
            raise DataError(f"{source}: no pairs to evaluate")
        collate = task.collator(tok)
        loss_fn = PreferenceLoss(cfg, getattr(run, "without_adapters", None))
        model = run.model
        model.eval()
        device = next(model.parameters()).device
        names = ("rewards", "desirable", "logps", "kl") if kto else PREDICTIONS
        parts: dict[str, list] = {n: [] for n in names}
        total = 0.0
        size = max(1, cfg.train.eval_batch_size or cfg.train.batch_size)
        with torch.no_grad():
            for lo in range(0, len(data), size):
                rows = [data[i] for i in range(lo, min(lo + size, len(data)))]
                batch = {k: v.to(device) for k, v in collate(rows).items()}
                loss, out = loss_fn(model, batch)
                total += float(loss) * len(rows)
                for n in names:
                    parts[n].append(out[n].float().cpu().numpy())

        # what compute_metrics receives from the Trainer
        pred = SimpleNamespace(predictions=[np.concatenate(parts[n]) for n in names])
        metrics = (kto_metrics if kto else preference_metrics)(pred)
        metrics = {"loss": total / len(data), **{k: v for k, v in metrics.items() if k in dict(SHOWN)}}
        metrics["answers" if kto else "pairs"] = len(data)
        write_report(Path(out_dir), {"data": source, "test": metrics}, "test", [], [], None)
        return metrics


class PreferenceExports(LMExports):
    """A preference run exports as a chat model; its parity rows are the held-out prompts with their chosen (KTO: own)
    answer, the text the tuned model was pushed towards."""

    def held_out_rows(self, split: Any, n: int) -> list[dict]:
        rows = []
        for r in split.select(range(n)):
            if "chosen_input_ids" in r:
                ids = list(r["chosen_input_ids"])
            else:  # kto: the prompt and its own answer
                ids = list(r["prompt_ids"]) + list(r["completion_ids"])
            rows.append({"input_ids": ids, "label": None})
        return rows
