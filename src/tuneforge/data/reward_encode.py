"""Preference pairs as a reward model reads them: each answer scored with its prompt as one sequence (the
conversation rendered with the run's chat template, or prompt and answer as a text pair for a model without one,
such as an encoder), and the batches of 2 x B rows a reward model scores in one forward pass. The length rule is
the preference task's (data/preference_encode.py): prompts are never cut, answers are cut to fit."""

from __future__ import annotations

from tuneforge.data.preference_encode import PairSettings, answer_conversation, pair_prompt_text
from tuneforge.errors import DataError


def scored_text(tokenizer, s: PairSettings, prompt: list[dict], answer: str) -> str:
    """The text a reward model with a chat template scores: the conversation (system prompt, prompt turns and the
    answer as the assistant's last turn) rendered with the run's template, end-of-turn token included.
    Raises DataError when the template cannot render it; ValueError without a chat template (`s.chat` None)."""
    from tuneforge.data.templates import render

    if s.chat is None:
        raise ValueError("no chat template: prompt and answer are scored as a text pair (pair_prompt_text, answer)")
    return render(tokenizer, s.chat.jinja, answer_conversation({"prompt": prompt}, answer, s.system_prompt))


def encode_scored_pairs(records: list[dict], tokenizer, split: str, stats: dict, s: PairSettings):
    """One split's pairs as a reward model reads them, or None for no records: a datasets.Dataset with
    chosen_input_ids, rejected_input_ids (and chosen/rejected_token_type_ids where the tokenizer makes them),
    margin (the record's `margin`, else 0) and length (the longer side).

    With a chat template (`s.chat`) each side is `scored_text` tokenized as it is (no special tokens added: the
    template holds them), so a finished run scores exactly what `tokenizer(text, add_special_tokens=False)` gives.
    Without one each side is the text pair (`pair_prompt_text(prompt)`, answer) with the tokenizer's special tokens.
    Either way the answer is cut so that the row fits `s.max_length` (the prompt never is: `prompt_lengths` checked
    it); `stats` gets `{split}_lengths` (tokens per pair before cutting), `{split}_truncated` (pairs with an answer
    cut) and `{split}_trained_tokens` (the tokens the model reads, both sides). Raises DataError for a record the
    template cannot render."""
    import datasets

    if not records:
        return None
    cols: dict[str, list] = {"chosen_input_ids": [], "rejected_input_ids": []}
    sides = [(r, side) for r in records for side in ("chosen", "rejected")]
    if s.chat is not None:
        texts = []
        for n, r in enumerate(records, start=1):
            try:
                texts += [scored_text(tokenizer, s, r["prompt"], r[side]) for side in ("chosen", "rejected")]
            except DataError as exc:
                raise DataError(f"{split} pair {n}: {exc}") from None
        full = tokenizer(texts, add_special_tokens=False)["input_ids"]
        rows = [{"input_ids": ids[: s.max_length]} for ids in full]
    else:
        prompts = [pair_prompt_text(r["prompt"], s.system_prompt) for r, _ in sides]
        answers = [r[side] for r, side in sides]
        full = tokenizer(prompts, answers)["input_ids"]
        cut = tokenizer(prompts, answers, truncation="only_second", max_length=s.max_length)
        rows = [{k: cut[k][i] for k in ("input_ids", "token_type_ids") if k in cut} for i in range(len(sides))]
        if "token_type_ids" in cut:
            cols.update(chosen_token_type_ids=[], rejected_token_type_ids=[])
    lengths, truncated, tokens = [], 0, 0
    for i in range(0, len(rows), 2):
        lengths.append(max(len(full[i]), len(full[i + 1])))
        truncated += any(len(full[j]) > len(rows[j]["input_ids"]) for j in (i, i + 1))
        for side, row in zip(("chosen", "rejected"), rows[i : i + 2]):
            for key, value in row.items():
                cols[f"{side}_{key}"].append(value)
            tokens += len(row["input_ids"])
    cols["margin"] = [float(r.get("margin", 0.0)) for r in records]
    cols["length"] = [max(len(a), len(b)) for a, b in zip(cols["chosen_input_ids"], cols["rejected_input_ids"])]
    stats[f"{split}_lengths"] = lengths
    stats[f"{split}_truncated"] = truncated
    stats[f"{split}_trained_tokens"] = tokens
    return datasets.Dataset.from_dict(cols)


class ScoredPairCollator:
    """Reward-model batches: B pairs as one batch of 2 x B rows, the chosen answers first (one forward pass scores
    both), right-padded with `pad_token_id` (token type ids with 0). `labels` holds each pair's margin [B] (float; 0
    without a margin column): the Trainer evaluates through the task's loss only for batches with labels."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        rows = [f["chosen_input_ids"] for f in features] + [f["rejected_input_ids"] for f in features]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "chosen_token_type_ids" in features[0]:
            types = [f["chosen_token_type_ids"] for f in features] + [f["rejected_token_type_ids"] for f in features]
            tt = torch.zeros_like(ids)
            for i, t in enumerate(types):
                tt[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
            batch["token_type_ids"] = tt
        batch["labels"] = torch.tensor([float(f.get("margin", 0.0)) for f in features], dtype=torch.float32)
        return batch
