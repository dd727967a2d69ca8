"""A run's vocabulary expansion (`model.extend_vocabulary`, `model.add_tokens`, `model.add_special_tokens`): which
tokens it adds, in which order, and how a finished run's base grows its embeddings again when the run loads.

The tokens are decided once per run and written to the run directory (`vocabulary.json`) before anything trains,
so `--resume` adds the same tokens with the same ids without learning them again; the finished model's metadata
(`model/tuneforge.json`, key `vocabulary`) holds the same list, and the run's tokenizer is saved extended. The
learning itself and the embedding initialisation are in models/vocabulary.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tuneforge.errors import ConfigError, ModelError

#: the file in the run directory that fixes the added tokens for --resume
VOCABULARY_FILE = "vocabulary.json"


def extend_for_run(model_cfg, tokenizer, run_dir: str | Path | None = None) -> list:
    """Add the run's tokens to `tokenizer` (in place) and return the VocabularyExtension of each addition (special
    tokens, given tokens, learned tokens; empty lists left out). With `run_dir`, a `vocabulary.json` there is
    reused (resume) and a new one written. Raises ConfigError for a processor that has no vocabulary (an image
    model) and for a corpus without the text column, DataError for an unreadable corpus."""
    from tuneforge.models.vocabulary import extend_tokenizer

    if not model_cfg.extends_vocabulary:
        return []
    if not hasattr(tokenizer, "add_tokens") or not hasattr(tokenizer, "backend_tokenizer"):
        raise ConfigError(
            "model.extend_vocabulary / add_tokens: the model's processor has no fast tokenizer to add tokens to"
        )
    saved = Path(run_dir) / VOCABULARY_FILE if run_dir is not None else None
    if saved is not None and saved.is_file():
        plan = json.loads(saved.read_text(encoding="utf-8"))
    else:
        plan = [
            {"tokens": list(model_cfg.add_special_tokens), "special": True},
            {"tokens": list(model_cfg.add_tokens), "special": False},
        ]
        if model_cfg.extend_vocabulary is not None:
            plan.append({"tokens": _learn(model_cfg.extend_vocabulary, tokenizer), "special": False})
    extensions = []
    for step in plan:
        if step["tokens"]:
            ext = extend_tokenizer(tokenizer, list(step["tokens"]), special=bool(step["special"]))
            if ext.tokens:
                extensions.append(ext)
    if saved is not None and not saved.is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(plan, ensure_ascii=False, indent=1), encoding="utf-8")
    added = sum(len(e.tokens) for e in extensions)
    print(
        f"tuneforge: vocabulary: {added} token(s) added ({len(tokenizer)} in all)"
        + (f": {', '.join(repr(t) for t in extensions[0].tokens[:8])}{' ...' if added > 8 else ''}" if added else ""),
        file=sys.stderr,
        flush=True,
    )
    return extensions


def _learn(section, tokenizer) -> list[str]:
    from tuneforge.data.sources import read_table
    from tuneforge.models.vocabulary import chars_per_token, train_new_tokens

    where = "model.extend_vocabulary.corpus"
    table = read_table(section.corpus, where)
    if section.text_column not in table.columns:
        raise ConfigError(
            f"model.extend_vocabulary.text_column: {section.corpus} has no column '{section.text_column}' "
            f"(columns: {', '.join(map(str, table.columns[:10]))})"
        )
    texts = [str(t) for t in table[section.text_column].dropna() if str(t).strip()]
    if not texts:
        raise ConfigError(f"{where}: {section.corpus} has no text in column '{section.text_column}'")
    print(
        f"tuneforge: vocabulary: learning up to {section.new_tokens} tokens from {len(texts)} texts of "
        f"{section.corpus} (base: {chars_per_token(tokenizer, texts):.2f} characters per token)",
        file=sys.stderr,
        flush=True,
    )
    return train_new_tokens(tokenizer, texts, section.new_tokens, section.min_frequency)


def inherited(model_path: str | Path) -> list:
    """The vocabulary additions of the tuneforge run (its model/tuneforge.json) or merged run (tuneforge_merge.json)
    that `model_path` is: a run continuing from it trains those tokens' rows as new ones, and records them again.
    Empty for any other model."""
    from tuneforge.models.vocabulary import VocabularyExtension

    for name in ("tuneforge.json", "tuneforge_merge.json"):
        path = Path(model_path) / name
        if path.is_file():
            try:
                records = json.loads(path.read_text(encoding="utf-8")).get("vocabulary") or []
            except (OSError, ValueError):
                return []
            return [VocabularyExtension.from_json(d) for d in records]
    return []


def new_token_ids(extensions: list) -> list[int]:
    return [i for e in extensions for i in e.ids]


def grow_model(model, extensions: list) -> None:
    """Grow the model's embeddings for `extensions` and initialise the new rows (models/vocabulary.resize_and_init),
    unless the model already has those rows (a whole model saved after training: its rows are the trained ones)."""
    from tuneforge.models.vocabulary import resize_and_init

    if not extensions:
        return
    rows = model.get_input_embeddings().weight.shape[0]
    for ext in extensions:
        if max(ext.ids) >= rows:
            resize_and_init(model, ext)
            rows = model.get_input_embeddings().weight.shape[0]


def metadata(extensions: list) -> list[dict]:
    """What model/tuneforge.json keeps (`vocabulary`): each addition's tokens, ids, pieces and kind."""
    return [e.to_json() for e in extensions]


def grow_for_run(model, meta: dict) -> None:
    """When a finished run loads on its base: grow the base's embeddings for the tokens the run added (its
    metadata's `vocabulary`; nothing for a run that added none)."""
    from tuneforge.models.vocabulary import VocabularyExtension

    grow_model(model, [VocabularyExtension.from_json(d) for d in meta.get("vocabulary") or []])


def check_embeddings(model, tokenizer, where: str) -> None:
    """A loaded run's tokenizer must not hold more tokens than its model has embedding rows: a tokenizer extended
    outside tuneforge (no `vocabulary` record to grow the base by) is a ModelError in one line, not an index error
    at the first new token."""
    try:
        rows = model.get_input_embeddings().weight.shape[0]
        size = len(tokenizer)
    except (AttributeError, NotImplementedError, TypeError):  # an image model, a processor without a vocabulary
        return
    if size > rows:
        raise ModelError(
            f"{where}: its tokenizer has {size} tokens but its model {rows} embedding rows: the tokenizer was "
            f"extended without tuneforge's record of the added tokens (model/tuneforge.json `vocabulary`), so the "
            f"base cannot embed them; load the run's own merged model, or retrain with model.add_tokens"
        )


def grow_base_copy(base, base_path: str, tokenizer) -> None:
    """A fresh copy of a run's base model, loaded beside the tuned one (the base's answers for comparison, a
    frozen reference): when the run's tokenizer holds tokens the base's embeddings have no rows for, grow them as
    the run's own rows started (each the mean of the rows of the pieces the base's own tokenizer splits the token
    into), so the copy reads the same token ids and computes what the run computed before its first step."""
    from tuneforge.models.loader import load_tokenizer
    from tuneforge.models.vocabulary import VocabularyExtension, resize_and_init

    rows = base.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= rows:
        return
    plain = load_tokenizer(base_path)
    ids = list(range(len(plain), len(tokenizer)))
    tokens = tokenizer.convert_ids_to_tokens(ids)
    pieces = {t: plain(t, add_special_tokens=False)["input_ids"] for t in tokens}
    resize_and_init(base, VocabularyExtension(tokens, ids, pieces, special=False))
