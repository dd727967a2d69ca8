"""A finished reward-model run: one scalar reward per text (`tuneforge predict`, serve /v1/classify: `{"score"}`),
`score(run, prompts, completions)` for scoring answers the way the run was trained (what an RL run calls), eval on a
pairs file (reward accuracy), and its exports (a one-column ONNX output `scores`, parity on held-out pairs).

How a text is scored is saved in model/tuneforge.json (`scoring`):

- `template`: the run has a chat template (saved with its tokenizer; the system prompt in `system_prompt`): the
  scored text is the conversation rendered with it, answer and end-of-turn token included. `predict` scores a text
  as it is (tokenized without added special tokens: a templated text holds them), so `predict(scored_texts(...))`
  equals `score(...)`.
- `pair`: a model without a chat template (an encoder): prompt text and answer are a text pair (`[CLS] prompt
  [SEP] answer [SEP]`); `predict` scores a text alone, as the first segment with the tokenizer's special tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneforge.errors import ConfigError, DataError, ModelError
from tuneforge.tasks.classification_hooks import ClassifierExports, ClassifierInference
from tuneforge.tasks.hooks import batched_logits

#: pairs with their rewards in the report of `tuneforge eval`
REPORTED_PAIRS = 10


def as_messages(prompt: Any, where: str = "prompt") -> list[dict]:
    """A prompt as a message list: a text is one user turn; a list of {"role", "content"} messages is kept."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt):
        return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in prompt]
    raise DataError(f"{where}: a prompt is a text or a list of {{'role', 'content'}} messages")


def _settings(run: Any):
    """The run's PairSettings (chat template or none, system prompt, lengths) from its saved metadata."""
    from tuneforge.data.preference_encode import PairSettings
    from tuneforge.data.templates import ChatFormat

    meta = run.meta
    chat = None
    if meta.get("scoring") == "template":
        jinja = run.tokenizer.chat_template
        if isinstance(jinja, dict):
            jinja = jinja.get("default")
        if not jinja:
            raise ModelError(f"{run.model_dir}: the run scores templated texts but its tokenizer has no chat template")
        chat = ChatFormat(meta.get("template") or "tokenizer", jinja, meta.get("end_of_turn_token"), None)
    max_length = int(meta.get("max_length") or 512)
    return PairSettings(chat, meta.get("system_prompt"), max_length, int(meta.get("max_prompt_length") or max_length))


class RewardInference(ClassifierInference):
    """A reward model: one output (`labels: ["score"]`), the pad token saved so the last real token is scored."""

    def head_kwargs(self, meta: dict) -> dict:
        return super().head_kwargs({**meta, "labels": meta.get("labels") or ["score"]})

    def logits(self, run: Any, texts: list, pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Rewards [N, 1] for `texts` (a templated run: tokenized as they are) or text pairs (a pair run)."""
        if pairs is not None:
            return batched_logits(run, texts, pairs, 1, batch_size, truncation="only_second")
        templated = run.meta.get("scoring") == "template"
        return batched_logits(run, texts, None, 1, batch_size, **({"add_special_tokens": False} if templated else {}))

    def predict(self, run: Any, texts: list, batch_size: int = 64) -> list[dict]:
        """`{"text", "score"}` for each text: the reward of the text as it is (for a templated run, give the
        templated conversation: `scored_texts`)."""
        if not texts:
            raise DataError("no texts to score")
        scores = self.logits(run, [str(t) for t in texts], batch_size=batch_size)[:, 0]
        return [{"text": t, "score": float(s)} for t, s in zip(texts, scores)]

    def scored_texts(self, run: Any, prompts: list, completions: list[str]) -> list[str]:
        """The texts a templated run scores for each (prompt, completion): the conversation rendered with the run's
        chat template and system prompt, as in training. Raises ModelError for a pair run (no single text)."""
        from tuneforge.data.reward_encode import scored_text

        s = _settings(run)
        if s.chat is None:
            raise ModelError(
                f"{run.model_dir}: this reward model scores prompt and answer as a text pair (it has no chat "
                f"template): use score(run, prompts, completions)"
            )
        _check_lengths(prompts, completions)
        return [
            scored_text(run.tokenizer, s, as_messages(p, f"prompt {i + 1}"), str(c))
            for i, (p, c) in enumerate(zip(prompts, completions))
        ]

    def score(self, run: Any, prompts: list, completions: list[str], batch_size: int = 64) -> list[float]:
        """The reward of each completion as the answer to its prompt (a text, or a list of messages ending with the
        user's turn), scored as in training: with the run's chat template and system prompt, or as a text pair.
        A prompt longer than the run's data.max_prompt_length is a DataError, as in training (prompts are never cut;
        an answer is cut so that the scored text fits data.max_length). Raises DataError for lists of different
        lengths or a prompt that is neither a text nor messages; ModelError as `scored_texts`."""
        from tuneforge.data.preference_encode import pair_prompt_text, prompt_lengths

        _check_lengths(prompts, completions)
        if not prompts:
            return []
        s = _settings(run)
        messages = [as_messages(p, f"prompt {i + 1}") for i, p in enumerate(prompts)]
        for i, n in enumerate(prompt_lengths([{"prompt": m} for m in messages], run.tokenizer, s)):
            if n > s.max_prompt_length:
                raise DataError(
                    f"prompt {i + 1} is {n} tokens, longer than the run's data.max_prompt_length={s.max_prompt_length} "
                    f"(prompts are never cut, as in training: shorten or leave out such prompts)"
                )
        if s.chat is not None:
            rewards = self.logits(run, self.scored_texts(run, prompts, completions), batch_size=batch_size)
        else:
            texts = [pair_prompt_text(m, s.system_prompt) for m in messages]
            rewards = self.logits(run, texts, [str(c) for c in completions], batch_size=batch_size)
        return [float(x) for x in rewards[:, 0]]

    def evaluate(
        self, run: Any, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
    ) -> dict:
        """Reward accuracy and margin of the run on a file of pairs (any pair format; the run's saved test split by
        default), with a few pairs and their rewards, written into `out_dir` (metrics.json, report.md)."""
        from pathlib import Path

        from tuneforge.data.preference_formats import parse_preference_records
        from tuneforge.data.sources import read_table
        from tuneforge.tasks.reward_eval import reward_metrics, shown_pairs, write_report

        if text_column or label_column:
            raise ConfigError("--text-column / --label-column: a reward run reads pairs (prompt, chosen, rejected)")
        kind, fmt, records = parse_preference_records(read_table(source), "auto", source)
        if kind != "paired" or not records:
            raise DataError(f"{source}: holds no pairs of a chosen and a rejected answer")
        prompts = [r["prompt"] for r in records]
        chosen = np.asarray(self.score(run, prompts, [r["chosen"] for r in records]))
        rejected = np.asarray(self.score(run, prompts, [r["rejected"] for r in records]))
        metrics = {**reward_metrics(chosen, rejected), "pairs": len(records)}
        write_report(
            Path(out_dir),
            {"data": source, "format": fmt, **metrics},
            metrics,
            f"{source} ({len(records)} pairs)",
            shown_pairs(records, chosen, rejected, REPORTED_PAIRS),
        )
        return metrics


def _check_lengths(prompts: list, completions: list) -> None:
    if len(prompts) != len(completions):
        raise DataError(f"{len(prompts)} prompts but {len(completions)} completions: give one prompt per completion")


class RewardExports(ClassifierExports):
    """Every classifier format; the ONNX graph's one output is `scores` [batch, 1]; parity on held-out pairs."""

    def onnx_outputs(self, meta: dict) -> list[tuple[str, int]]:
        return [("scores", 1)]

    def held_out_rows(self, split: Any, n: int) -> list[dict]:
        """Both answers of the first `n` held-out pairs as rows, chosen then rejected (`label` 1 and 0)."""
        rows = []
        for r in split.select(range(n)):
            for side, label in (("chosen", 1), ("rejected", 0)):
                row = {"input_ids": list(r[f"{side}_input_ids"]), "label": label}
                if f"{side}_token_type_ids" in r:
                    row["token_type_ids"] = list(r[f"{side}_token_type_ids"])
                rows.append(row)
        return rows

    def parity(
        self,
        reference: list[np.ndarray],
        exported: list[np.ndarray],
        rows: list[dict],
        split: str,
        meta: dict | None = None,
    ) -> dict:
        """Largest reward difference, and the reward accuracy of both on the pairs (with how often they agree on
        which answer of a pair is better)."""
        ref = np.asarray([float(a[0]) for a in reference])
        exp = np.asarray([float(b[0]) for b in exported])
        ref_wins, exp_wins = ref[0::2] > ref[1::2], exp[0::2] > exp[1::2]
        return {
            "split": split,
            "rows": len(rows),
            "pairs": len(rows) // 2,
            "max_abs_logit_diff": float(np.abs(ref - exp).max()),
            "pair_order_agreement": float((ref_wins == exp_wins).mean()),
            "reference_reward_accuracy": float(ref_wins.mean()),
            "export_reward_accuracy": float(exp_wins.mean()),
        }
