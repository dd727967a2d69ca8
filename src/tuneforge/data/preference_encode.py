"""Preference pairs (and KTO's unpaired answers) to training rows: the prompt conversation and each answer rendered
with the chat template and tokenized as in SFT (data/templates), the loss on the final answer only (its end-of-turn
token included). Reward models read the same pairs as whole sequences to score (data/reward_encode.py).

The length rule, written down: prompts are never cut. A prompt (the templated conversation before the answer,
the generation prompt included) longer than `data.max_prompt_length` tokens is a bad record (`prompt_lengths`
finds them before splitting, so `data.bad_records` reports them with their record numbers). An answer is cut so
that prompt + answer fit `data.max_length`; a pair with either answer cut is counted as truncated."""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.errors import DataError


@dataclass
class PairSettings:
    chat: object  # the data.templates.ChatFormat the run uses
    system_prompt: str | None
    max_length: int
    max_prompt_length: int


def answer_conversation(record: dict, answer: str, system_prompt: str | None) -> list[dict]:
    """The record's prompt turns with `answer` as the assistant's last turn, the system prompt first."""
    from tuneforge.data.templates import with_system

    return with_system([*record["prompt"], {"role": "assistant", "content": answer}], system_prompt)


def pair_prompt_text(prompt: list[dict], system_prompt: str | None = None) -> str:
    """A prompt conversation as one plain text, for models without a chat template (an encoder such as MiniLM): the
    turns' contents (the system prompt first) joined by blank lines, without role names."""
    from tuneforge.data.templates import with_system

    return "\n\n".join(m["content"] for m in with_system(prompt, system_prompt))


def prompt_lengths(records: list[dict], tokenizer, s: PairSettings) -> list[int]:
    """Tokens of each record's templated prompt (generation prompt included), as training will see it. Without a
    chat template (`s.chat` None: a reward model scoring text pairs, `encode_scored_pairs`): the tokens of the pair
    before its answer (the prompt text with the tokenizer's special tokens)."""
    from tuneforge.data.templates import render, with_system

    if s.chat is None:
        texts = [pair_prompt_text(r["prompt"], s.system_prompt) for r in records]
        return [len(ids) for ids in tokenizer(texts, [""] * len(texts))["input_ids"]] if texts else []
    texts = [
        render(tokenizer, s.chat.jinja, with_system(r["prompt"], s.system_prompt), add_generation_prompt=True)
        for r in records
    ]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _last_answer_only(segs: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    # the earlier assistant turns of a multi-turn prompt are context, not what the pair compares
    last = max(i for i, (_, target) in enumerate(segs) if target)
    return [(text, target and i == last) for i, (text, target) in enumerate(segs)]


def encode_pairs(records: list[dict], tokenizer, split: str, stats: dict, s: PairSettings):
    """One split's pairs as a datasets.Dataset (chosen_input_ids, chosen_labels, rejected_input_ids,
    rejected_labels, length = the longer of the two), or None for no records. `stats` gets `{split}_lengths`
    (tokens per pair before cutting), `{split}_truncated` (pairs with an answer cut) and the trained tokens.
    Raises DataError for a record the template cannot render."""
    import datasets

    from tuneforge.data.templates import IGNORE, conversation_segments, encode_segments

    if not records:
        return None
    segs = []
    for n, r in enumerate(records, start=1):
        for answer in (r["chosen"], r["rejected"]):
            conv = answer_conversation(r, answer, s.system_prompt)
            try:
                segs.append(_last_answer_only(conversation_segments(tokenizer, s.chat, conv)))
            except DataError as exc:
                raise DataError(f"{split} pair {n}: {exc}") from None
    encoded = encode_segments(tokenizer, segs, train_on_prompt=False)
    cols: dict[str, list] = {k: [] for k in ("chosen_input_ids", "chosen_labels", "rejected_input_ids")}
    cols.update(rejected_labels=[], length=[])
    lengths, truncated, trained = [], 0, 0
    for i in range(0, len(encoded), 2):
        pair = encoded[i : i + 2]
        lengths.append(max(len(e.input_ids) for e in pair))
        cut = False
        for side, e in zip(("chosen", "rejected"), pair):
            ids, labels = e.input_ids, e.labels
            if len(ids) > s.max_length:
                ids, labels, cut = ids[: s.max_length], labels[: s.max_length], True
            labels = [IGNORE] + labels[1:]  # the first token has no context to be predicted from
            trained += sum(x != IGNORE for x in labels)
            cols[f"{side}_input_ids"].append(ids)
            cols[f"{side}_labels"].append(labels)
        cols["length"].append(max(len(cols["chosen_input_ids"][-1]), len(cols["rejected_input_ids"][-1])))
        truncated += cut
    stats[f"{split}_lengths"] = lengths
    stats[f"{split}_truncated"] = truncated
    stats[f"{split}_trained_tokens"] = trained
    return datasets.Dataset.from_dict(cols)


def encode_unpaired(records: list[dict], tokenizer, split: str, stats: dict, s: PairSettings):
    """One split's unpaired answers (KTO) as a datasets.Dataset (prompt_ids, completion_ids, completion_labels,
    desirable, length), or None for no records; the prompt and the answer are kept apart so that the collator can
    also pair each prompt with another row's answer (KTO's KL estimate). `stats` as in `encode_pairs`."""
    import datasets

    from tuneforge.data.templates import IGNORE, conversation_segments, encode_segments

    if not records:
        return None
    segs = []
    for n, r in enumerate(records, start=1):
        try:
            conv = answer_conversation(r, r["completion"], s.system_prompt)
            segs.append(_last_answer_only(conversation_segments(tokenizer, s.chat, conv)))
        except DataError as exc:
            raise DataError(f"{split} record {n}: {exc}") from None
    cols: dict[str, list] = {k: [] for k in ("prompt_ids", "completion_ids", "completion_labels", "desirable")}
    cols["length"] = []
    lengths, truncated, trained = [], 0, 0
    for r, e in zip(records, encode_segments(tokenizer, segs, train_on_prompt=False)):
        start = next(i for i, x in enumerate(e.labels) if x != IGNORE)
        lengths.append(len(e.input_ids))
        ids, labels = e.input_ids[: s.max_length], e.labels[: s.max_length]
        truncated += len(e.input_ids) > s.max_length
        trained += sum(x != IGNORE for x in labels)
        cols["prompt_ids"].append(ids[:start])
        cols["completion_ids"].append(ids[start:])
        cols["completion_labels"].append(labels[start:])
        cols["desirable"].append(bool(r["label"]))
        cols["length"].append(len(ids))
    stats[f"{split}_lengths"] = lengths
    stats[f"{split}_truncated"] = truncated
    stats[f"{split}_trained_tokens"] = trained
    return datasets.Dataset.from_dict(cols)


def _padded(rows: list[tuple[list[int], list[int]]], pad: int) -> dict:
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.as_tensor(x)
        labels[i, : len(y)] = torch.as_tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class UnpairedCollator:
    """KTO batches: B rows of prompt + its own answer, then B rows of the same prompts each with the previous row's
    answer (the mismatched pairs whose log-ratio estimates the KL term, as TRL builds them), cut at `max_length`;
    `desirable` [B] says which answers are good."""

    def __init__(self, pad_token_id: int, max_length: int):
        self.pad, self.max_length = pad_token_id, max_length

    def _row(self, prompt: list[int], ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        full = (prompt + ids)[: self.max_length]
        return full, ([-100] * len(prompt) + labels)[: self.max_length]

    def __call__(self, features: list[dict]) -> dict:
        import torch

        own = [self._row(f["prompt_ids"], f["completion_ids"], f["completion_labels"]) for f in features]
        other = [features[i - 1] for i in range(len(features))]  # a one-row batch pairs a prompt with its own answer
        kl = [self._row(f["prompt_ids"], o["completion_ids"], o["completion_labels"]) for f, o in zip(features, other)]
        batch = _padded(own + kl, self.pad)
        batch["desirable"] = torch.tensor([bool(f["desirable"]) for f in features])
        return batch


class PairCollator:
    """Batches of pairs as one batch of 2 x B rows, the chosen answers first: one forward pass computes both
    (right-padded to the batch's longest row; labels -100 on padding); `ref_logps` [2B] where the pairs carry
    precomputed reference log-probs."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        rows = [(f["chosen_input_ids"], f["chosen_labels"]) for f in features]
        rows += [(f["rejected_input_ids"], f["rejected_labels"]) for f in features]
        batch = _padded(rows, self.pad)
        if "ref_chosen_logps" in features[0]:  # the reference's log-probs, computed before training
            import torch

            ref = [f["ref_chosen_logps"] for f in features] + [f["ref_rejected_logps"] for f in features]
            batch["ref_logps"] = torch.tensor(ref, dtype=torch.float32)
        return batch
