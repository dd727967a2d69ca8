"""Vocabulary expansion for fine-tuning (as LLaMA-Factory and Chinese-LLaMA do): learn new tokens from a corpus, add
them to a Hugging Face fast tokenizer, grow the model's embeddings and start each new row as the mean of the old rows
of the pieces the old tokenizer split that token into. A base whose tokenizer spends 2-3 tokens on every Chinese word
reads and writes such text 2-3 times slower and sees less of it per context; the mean start keeps the new rows in the
region of the embedding space the model already uses, so training starts from "roughly what the pieces meant".

How tokens are added: as added tokens (`tokenizers.AddedToken`), not by rewriting the BPE vocabulary and merges.
  - One mechanism for every model kind (byte-level BPE, sentencepiece-style BPE, WordPiece, Unigram); merges exist for
    BPE only, and appending merges changes how *other* words are segmented wherever the merged pair appears.
  - Every old id and the segmentation of any text without the new tokens stay exactly as they were: added tokens are
    matched in the raw (or normalised) text first, and only the text between them goes through the old pipeline.
  - It is what `tokenizer.json` stores (`added_tokens`) and what `transformers` and PEFT reload without custom code.
  Costs: an added token always wins where its text occurs, so tokens of ASCII letters/digits are `single_word` (`ing`
  must not match inside `thing`), while CJK tokens are not (Chinese has no spaces: a new word must match inside a
  sentence); the space before an added English word stays its own token in byte-level BPE and Metaspace tokenizers
  (the ranking in `train_new_tokens` counts that). Metaspace tokenizers with `prepend_scheme="always"` put a `▁` after
  each added token (see transformers' `add_tokens` docs).
  Byte-level BPE: the ByteLevel decoder maps each character of a token back to one byte through GPT-2's byte alphabet
  and only falls back to the token's own UTF-8 when some character is outside that alphabet. An added token made only
  of alphabet characters but not plain ASCII (`café`, `naïve`, `Ġx`) therefore decodes to wrong bytes (`caf\\ufffd`).
  `extend_tokenizer` finds those tokens by decoding each one alone and puts a `Replace` decoder, anchored to the whole
  token, in front of the ByteLevel one, rewriting the token to its byte-alphabet spelling; the round trip is exact and
  the fix is saved in `tokenizer.json` like any decoder. Tokens equal to an existing raw vocabulary string are skipped
  (adding them would reuse the old id and meaning), so the rewrite never touches an old token.

Memory: `resize_token_embeddings` allocates a new (rows x hidden) matrix and copies the old rows, so the peak is twice
the input embedding (and twice the output head when untied). The mean start gathers only each token's own rows, in
float32, one token at a time: no full float32 copy. Training just the new rows (PEFT `trainable_token_indices`) keeps
a (new tokens x hidden) delta and its optimizer state; training the whole embedding (`modules_to_save`) keeps a full
copy plus two Adam states: for a 150k x 4096 embedding in fp32, about 7 GiB more."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from tuneforge.errors import ConfigError

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # sentencepiece byte-fallback tokens
_MAX_TRAIN_VOCAB = 500_000
_MAX_CHARS = 16  # longest new token, in characters (sentencepiece's max_piece_length)
_KINDS = {"BPE": "bpe", "WordPiece": "wordpiece", "Unigram": "unigram"}


@dataclass
class VocabularyExtension:
    """What `extend_tokenizer` added: enough to resize and initialise a model, and to record it in a run's metadata."""

    tokens: list[str] = field(default_factory=list)  # the tokens added, in id order, as text
    ids: list[int] = field(default_factory=list)  # their ids, consecutive from the old len(tokenizer)
    pieces: dict[str, list[int]] = field(default_factory=dict)  # each token's ids under the tokenizer before
    special: bool = False

    def to_json(self) -> dict:
        return {
            "tokens": list(self.tokens),
            "ids": [int(i) for i in self.ids],
            "pieces": {t: [int(i) for i in p] for t, p in self.pieces.items()},
            "special": bool(self.special),
        }

    @classmethod
    def from_json(cls, d: dict) -> VocabularyExtension:
        return cls(
            tokens=[str(t) for t in d["tokens"]],
            ids=[int(i) for i in d["ids"]],
            pieces={str(t): [int(i) for i in p] for t, p in d["pieces"].items()},
            special=bool(d.get("special", False)),
        )


def tokenizer_kind(tokenizer) -> str:
    """'byte-level-bpe', 'bpe', 'wordpiece' or 'unigram', from the fast tokenizer's backend model (and, for BPE,
    whether its pre-tokenizer or decoder is ByteLevel). ConfigError for anything else."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(
            f"vocabulary expansion needs a fast tokenizer (tokenizers backend); {type(tokenizer).__name__} has none"
        )
    model = type(backend.model).__name__
    if model not in _KINDS:
        raise ConfigError(f"vocabulary expansion supports BPE, WordPiece and Unigram tokenizers, not {model}")
    if model == "BPE" and any(
        part is not None and '"ByteLevel"' in str(part.__getstate__())
        for part in (backend.pre_tokenizer, backend.decoder)
    ):
        return "byte-level-bpe"
    return _KINDS[model]


def train_new_tokens(tokenizer, texts: Iterable[str], new_tokens: int, min_frequency: int = 2) -> list[str]:
    """At most `new_tokens` new tokens for `tokenizer`, learnt from `texts`, those that save the most tokens first.

    A tokenizer of the base's own kind (same model type, the base's normalizer and pre-tokenizer, so words are split
    the way the base splits them) is trained on the texts; its pieces, as text, are the candidates. Kept: whole valid
    text, no whitespace, not a token of the base already, split by the base into 2+ tokens (or into its unknown
    token: a character the base cannot encode at all is worth adding), occurring at least `min_frequency` times.
    Ranked by occurrences x tokens saved per occurrence (pieces - 1, + 1 per unknown piece), counted in the normalised
    corpus: substring counts, or whole-word counts for `single_word` tokens (ASCII letters/digits), whose saving is
    measured after a space (the space before an added word stays a token of its own in byte-level BPE)."""
    if new_tokens < 1:
        raise ConfigError(f"new_tokens must be at least 1, got {new_tokens}")
    texts = [t for t in texts if t and not t.isspace()]
    if not texts:
        raise ConfigError("no texts to learn new tokens from (the corpus is empty)")
    kind = tokenizer_kind(tokenizer)
    backend = tokenizer.backend_tokenizer
    corpus = "\n".join(texts)
    if backend.normalizer is not None:
        corpus = backend.normalizer.normalize_str(corpus)
    alphabet = 256 if kind == "byte-level-bpe" else len(set(corpus)) * (2 if kind == "wordpiece" else 1)
    known = _known(tokenizer, kind)
    ranked: list[str] = []
    for factor in (4, 16, 64):  # retrain larger when too many learnt pieces were already known
        size = min(alphabet + factor * new_tokens, _MAX_TRAIN_VOCAB)
        pieces = _train(backend, kind, texts, size, min_frequency)
        candidates = dict.fromkeys(t for t in (_text_form(p, kind, backend) for p in pieces) if t and t not in known)
        plain = [t for t in candidates if len(t) <= _MAX_CHARS and not any(c.isspace() for c in t)]
        ranked = _rank(tokenizer, plain, corpus, min_frequency)
        if len(ranked) >= new_tokens or len(pieces) < size or size == _MAX_TRAIN_VOCAB:
            break
    return ranked[:new_tokens]


def extend_tokenizer(tokenizer, tokens: list[str], special: bool = False) -> VocabularyExtension:
    """Add `tokens` to `tokenizer` in place (duplicates once; tokens it already has, or encodes as one known token,
    skipped) and return what was added, with each token's pieces under the tokenizer as it was before."""
    from tokenizers import AddedToken

    kind = tokenizer_kind(tokenizer)
    backend = tokenizer.backend_tokenizer
    known = _known(tokenizer, kind)
    todo = [t for t in dict.fromkeys(tokens) if t and t not in known]
    # a plain word the base has as a word-start token ('Ġmodel') is skipped: added, " model" would become 2 tokens
    savings = _savings(tokenizer, todo)
    keep = [(t, ids) for t, (ids, saved, lost) in zip(todo, savings) if lost or saved or (special and len(ids) > 1)]
    norm = backend.normalizer
    added = [
        AddedToken(
            t,
            single_word=_single_word(t),
            lstrip=False,
            rstrip=False,
            # matched in the normalised text when normalising leaves the token as it is ("training" also matches
            # "Training" in an uncased BERT); otherwise in the raw text: BERT's normaliser spaces out CJK characters
            # ("模型" -> " 模  型 "), Metaspace ones prepend "▁": the token would never match, or be stored altered
            normalized=not special and (norm is None or norm.normalize_str(t) == t),
            special=special,
        )
        for t, _ in keep
    ]
    start = _first_new_id(tokenizer) if added else 0
    if added:
        tokenizer.add_tokens(added, special_tokens=special)
    ids = tokenizer.convert_tokens_to_ids([t for t, _ in keep])
    kept = [(t, p, i) for (t, p), i in zip(keep, ids) if i is not None and i >= start]
    if kind == "byte-level-bpe":
        _keep_decodable(backend, [t for t, _, _ in kept])
    return VocabularyExtension(
        tokens=[t for t, _, _ in kept], ids=[i for _, _, i in kept], pieces={t: p for t, p, _ in kept}, special=special
    )


def _first_new_id(tokenizer) -> int:
    """The id `tokenizers` gives the next added token (after the added tokens above the model's vocabulary, else the
    model's vocabulary size); ConfigError when that id is taken: a vocabulary with gaps (a vocab.txt with a duplicate
    line has n tokens with ids up to n) would hand an old token's id to a new one."""
    size = tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=False)
    added = max(tokenizer.get_added_vocab().values(), default=-1)
    first = added + 1 if added >= size else size
    top = max(tokenizer.get_vocab().values(), default=-1)
    if first <= top:
        raise ConfigError(
            f"the tokenizer's ids have gaps ({size} vocabulary tokens, ids up to {top}): a new token would get the id "
            f"{first} of an existing one; rebuild it without duplicate vocabulary entries"
        )
    return first


def resize_and_init(model, extension: VocabularyExtension) -> None:
    """Grow `model`'s embeddings to hold the extension's ids (never shrink) and start each new row, input and untied
    output (weight and bias), as the mean of its pieces' rows. Old rows are left bit-identical."""
    import torch

    if not extension.ids:
        return
    rows = model.get_input_embeddings().weight.shape[0]
    new_size = max(rows, max(extension.ids) + 1)
    if new_size > rows:
        model.resize_token_embeddings(new_size, mean_resizing=False)
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    targets = [emb]
    if out is not None and getattr(out, "weight", None) is not None:
        if out.weight is not emb and out.weight.data_ptr() != emb.data_ptr():
            targets.append(out.weight)
        if getattr(out, "bias", None) is not None:
            targets.append(out.bias)
    with torch.no_grad():
        for w in targets:
            fallback = w[:rows].float().mean(0).to(w.dtype)  # a token with no pieces: the mean of all old rows
            for token, i in zip(extension.tokens, extension.ids):
                pieces = [p for p in extension.pieces.get(token, []) if p < rows]
                w[i] = w[pieces].float().mean(0).to(w.dtype) if pieces else fallback


def chars_per_token(tokenizer, texts: Iterable[str]) -> float:
    """Characters per token over `texts` (no special tokens): how much text a token carries; 0.0 for no tokens."""
    texts = list(texts)
    if not texts:
        return 0.0
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return sum(len(t) for t in texts) / tokens if tokens else 0.0


@lru_cache(maxsize=1)
def _byte_alphabet() -> tuple[dict[int, str], dict[str, int]]:
    """GPT-2's byte-level alphabet: byte -> printable character, and back."""
    to_char = {b: chr(b) for b in [*range(33, 127), *range(161, 173), *range(174, 256)]}
    extra = 0
    for b in range(256):
        if b not in to_char:
            to_char[b] = chr(256 + extra)
            extra += 1
    return to_char, {c: b for b, c in to_char.items()}


def _single_word(token: str) -> bool:
    return token.isascii() and token.isalnum()


def _text_form(piece: str, kind: str, backend, strip: bool = True) -> str | None:
    """A vocabulary piece as text (`strip`: without the leading space its marker 'Ġ'/'▁' stands for), or None: a
    partial UTF-8 character, a byte-fallback token, a WordPiece/BPE continuation piece."""
    if kind == "byte-level-bpe":
        to_byte = _byte_alphabet()[1]
        if any(c not in to_byte for c in piece):
            return None
        try:
            text = bytes(to_byte[c] for c in piece).decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        prefix = getattr(backend.model, "continuing_subword_prefix", None)
        suffix = getattr(backend.model, "end_of_word_suffix", None)
        if (prefix and piece.startswith(prefix)) or _BYTE_PIECE.fullmatch(piece):
            return None
        if suffix and piece.endswith(suffix):
            piece = piece[: -len(suffix)]
        text = piece.replace("▁", " ")
    text = text[1:] if strip and text.startswith(" ") else text
    return text if text and not text.isspace() else None


def _known(tokenizer, kind: str) -> set[str]:
    """Every string the tokenizer already has as a token: raw vocabulary entries, their text forms, added tokens.
    A word-start piece keeps its space ('Ġ模型' is ' 模型'): Chinese words rarely follow a space, so '模型' is new."""
    raw = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    known = set(raw)
    known.update(t for t in (_text_form(p, kind, tokenizer.backend_tokenizer, strip=False) for p in raw) if t)
    known.update(tokenizer.get_added_vocab())
    return known


def _train(backend, kind: str, texts: list[str], size: int, min_frequency: int) -> list[str]:
    """The vocabulary (in id order) of a tokenizer of the base's kind trained on `texts` with the base's normalizer and
    pre-tokenizer (a base without one, like converted sentencepiece BPE, is split at spaces / '▁')."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    prefix = getattr(backend.model, "continuing_subword_prefix", None)
    suffix = getattr(backend.model, "end_of_word_suffix", None)
    common = {"vocab_size": size, "show_progress": False}
    if kind == "wordpiece":
        model = models.WordPiece(unk_token=backend.model.unk_token)
        trainer = trainers.WordPieceTrainer(
            min_frequency=min_frequency, continuing_subword_prefix=prefix or "##", **common
        )
    elif kind == "unigram":
        model, trainer = models.Unigram(), trainers.UnigramTrainer(**common)
    else:
        affixes = {k: v for k, v in (("continuing_subword_prefix", prefix), ("end_of_word_suffix", suffix)) if v}
        model = models.BPE(**affixes)
        if kind == "byte-level-bpe":
            affixes["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(min_frequency=min_frequency, **affixes, **common)
    learner = Tokenizer(model)
    if backend.normalizer is not None:
        learner.normalizer = backend.normalizer
    learner.pre_tokenizer = backend.pre_tokenizer or pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
    learner.train_from_iterator(texts, trainer)
    vocab = learner.get_vocab(with_added_tokens=False)
    return sorted(vocab, key=vocab.__getitem__)


def _savings(tokenizer, tokens: list[str]) -> list[tuple[list[int], int, int]]:
    """For each token: its ids under the tokenizer, the tokens one occurrence saves once it is added (0 when it is one
    token already), and how many of its pieces are the unknown token. A single-word token mid-sentence costs the space
    token before it plus itself in byte-level BPE and Metaspace tokenizers: its saving is measured against ' token'."""
    if not tokens:
        return []
    unk = tokenizer.unk_token_id
    encoded = tokenizer(tokens, add_special_tokens=False)["input_ids"]
    words = [t for t in tokens if _single_word(t)]
    after = (
        dict(zip(words, tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"])) if words else {}
    )
    space = len(tokenizer(" ", add_special_tokens=False)["input_ids"])
    out = []
    for token, ids in zip(tokens, encoded):
        saved = min(len(ids), len(after[token]) - space if token in after else len(ids)) - 1
        out.append((ids, max(saved, 0), ids.count(unk) if unk is not None else 0))
    return out


def _rank(tokenizer, candidates: list[str], corpus: str, min_frequency: int) -> list[str]:
    """`candidates` that save base tokens over `corpus`, most saved first (ties: in the trainer's order)."""
    word_counts = Counter(re.findall(r"\w+", corpus)) if any(_single_word(c) for c in candidates) else Counter()
    scored = []
    for token, (_, saved, lost) in zip(candidates, _savings(tokenizer, candidates)):
        count = word_counts[token] if _single_word(token) else corpus.count(token)
        if count >= min_frequency and saved + lost > 0:
            scored.append((count * (saved + lost), token))
    scored.sort(key=lambda s: -s[0])  # stable: equal savings keep the trainer's order
    return [t for _, t in scored]


def _keep_decodable(backend, tokens: list[str]) -> None:
    """Make byte-level decoding of the added `tokens` exact (see the module docstring): each token that the decoder
    alone would not give back unchanged is rewritten, as a whole token, to its byte-alphabet spelling first."""
    from tokenizers import Regex, decoders

    decoder = backend.decoder
    if decoder is None:
        return
    to_char = _byte_alphabet()[0]
    fixes = [
        decoders.Replace(Regex(r"\A" + re.escape(t) + r"\z"), "".join(to_char[b] for b in t.encode("utf-8")))
        for t in tokens
        if decoder.decode([t]) != t
    ]
    if fixes:
        backend.decoder = decoders.Sequence([*fixes, decoder])
