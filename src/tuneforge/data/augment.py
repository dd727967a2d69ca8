"""Easy data augmentation (Wei & Zou, 2019): synonym replacement, random insertion, random swap and random
deletion, in English (WordNet) and Chinese (Cilin synonyms, jieba segmentation).

Every random choice comes from a `random.Random` seeded by (seed, example index, copy index), so a copy does
not depend on which other examples were augmented, and the same seed always gives the same data. Protected
words (listed ones, numbers, capitalised words inside a sentence) are never replaced, moved or deleted.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tuneforge.data.text import LANGUAGES, detect_language
from tuneforge.errors import ConfigError, DataError

log = logging.getLogger("tuneforge")

EDA_OPS = ("synonym", "insert", "swap", "delete")
ALL_OPS = EDA_OPS + ("back_translation",)
_EN_WORD = re.compile(r"(\W*?)([A-Za-z]+(?:['\u2019-][A-Za-z]+)*)(\W*)")
_SENTENCE_END = (".", "!", "?", "\u3002", "\uff01", "\uff1f")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# negations flip a sentence's meaning (and a sentiment label) when deleted or moved, so they are protected
_EN_NEGATIONS = frozenset("not no never nor neither nothing nobody none nowhere without cannot".split())
_ZH_NEGATION_PREFIXES = tuple("不没未别莫勿")  # 不好, 没有, 未必, 别走: 无/非 start too many other words (非常)
_ZH_NEGATIONS = frozenset("无 非 无法 毫无 并非 绝非 从不 从没 绝不 决不 永不 再也不".split())
# function words that carry no content, so replacing or inserting their synonyms only adds noise
_ZH_STOP = frozenset(
    "的 了 是 在 和 与 及 或 也 就 都 而 但 又 很 把 被 给 对 从 向 着 过 吗 呢 吧 啊 呀 我 你 他 她 它 "
    "我们 你们 他们 这 那 这个 那个 一个 有 没有 不 没 之 其 以 为 于 则 所 之后 因为 所以 如果 虽然".split()
)


def _en_stop() -> frozenset:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


@dataclass
class _Tok:
    pre: str
    core: str
    suf: str
    word: bool  # a word the operations may use
    protected: bool = False


@dataclass
class Augmenter:
    """Configured EDA operations. `augment(text, rng)` returns one augmented copy.

    Args:
        ops: operations to choose from (synonym, insert, swap, delete; back_translation is done in batches by
            `augment_dataset` through `back_translator`).
        synonym_rate, insert_rate, swap_rate: share of the words changed by that operation (at least one).
        delete_rate: probability of deleting each word.
        language: `auto` (per example, from the script), `en` or `zh`.
        protect: words never changed (case-insensitive).
        protect_entities: also protect numbers and capitalised words inside a sentence.
        protect_negations: also protect negations ("not", "never", "isn't", 不, 没有, ...).
        synonym_senses: English synonyms from the N most frequent WordNet senses per part of speech (0: all).

    Raises:
        ConfigError: an unknown operation or language, or a rate outside [0, 1].
    """

    ops: Sequence[str] = EDA_OPS
    synonym_rate: float = 0.1
    insert_rate: float = 0.1
    swap_rate: float = 0.1
    delete_rate: float = 0.1
    language: str = "auto"
    protect: Sequence[str] = ()
    protect_entities: bool = True
    protect_negations: bool = True
    synonym_senses: int = 2
    _protect: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self):
        unknown = [op for op in self.ops if op not in ALL_OPS]
        if unknown:
            raise ConfigError(f"data.augment.ops: unknown operation '{unknown[0]}' (use {', '.join(ALL_OPS)})")
        if self.language not in ("auto", *LANGUAGES):
            raise ConfigError(
                f"data.augment.language: unsupported language '{self.language}' "
                f"(supported: auto, {', '.join(LANGUAGES)})"
            )
        for name in ("synonym_rate", "insert_rate", "swap_rate", "delete_rate"):
            rate = getattr(self, name)
            if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                raise ConfigError(f"data.augment.{name} must be between 0 and 1, got {rate!r}")
        if not isinstance(self.synonym_senses, int) or self.synonym_senses < 0:
            raise ConfigError(
                f"data.augment.synonym_senses must be 0 (all senses) or a positive number, got {self.synonym_senses!r}"
            )
        self._protect = {w.casefold() for w in self.protect}

    @classmethod
    def from_config(cls, a) -> Augmenter:
        """Build from a `data.augment` config section."""
        return cls(
            ops=list(a.ops),
            synonym_rate=a.synonym_rate,
            insert_rate=a.insert_rate,
            swap_rate=a.swap_rate,
            delete_rate=a.delete_rate,
            language=a.language,
            protect=list(a.protect),
            protect_entities=a.protect_entities,
            protect_negations=a.protect_negations,
            synonym_senses=a.synonym_senses,
        )

    # ---- language-specific tokenisation ------------------------------------------------------------------
    def language_of(self, text: str) -> str:
        return detect_language(text) if self.language == "auto" else self.language

    def _tokens(self, text: str, lang: str) -> list[_Tok]:
        if lang == "zh":
            return self._zh_tokens(text)
        toks, sentence_start = [], True
        for chunk in text.split():
            m = _EN_WORD.fullmatch(chunk)
            if m:
                pre, core, suf = m.groups()
                low = core.casefold()
                prot = (
                    low in self._protect
                    or (
                        self.protect_entities
                        and core[0].isupper()
                        and not sentence_start
                        and not pre.startswith(('"', "'"))
                    )
                    or (self.protect_negations and (low in _EN_NEGATIONS or low.endswith(("n't", "n\u2019t"))))
                )
                toks.append(_Tok(pre, core, suf, True, prot))
            else:
                toks.append(_Tok("", chunk, "", False, True))
            sentence_start = chunk.endswith(_SENTENCE_END)
        return toks

    def _zh_tokens(self, text: str) -> list[_Tok]:
        jieba = _jieba()
        toks = []
        for w in jieba.lcut(text):
            is_word = bool(_HAN.search(w)) and not any(c.isdigit() for c in w)
            prot = (
                w.casefold() in self._protect
                or (self.protect_entities and any(c.isdigit() or c.isascii() and c.isalpha() for c in w))
                or (self.protect_negations and (w.startswith(_ZH_NEGATION_PREFIXES) or w in _ZH_NEGATIONS))
            )
            toks.append(_Tok("", w, "", is_word, prot or not is_word))
        return toks

    @staticmethod
    def _join(toks: list[_Tok], lang: str) -> str:
        sep = "" if lang == "zh" else " "
        return sep.join(t.pre + t.core + t.suf for t in toks if t.pre or t.core or t.suf)

    def _synonyms(self, word: str, lang: str) -> tuple[str, ...]:
        from tuneforge.data.synonyms import chinese_synonyms, english_synonyms

        if lang == "zh":
            # single characters are too ambiguous in Cilin (好 shares groups with 坏 in its "very" sense)
            return tuple(s for s in chinese_synonyms().get(word, ()) if len(s) > 1) if len(word) > 1 else ()
        syns = english_synonyms(senses=self.synonym_senses).get(word.casefold(), ())
        if word[:1].isupper():
            syns = tuple(s[:1].upper() + s[1:] for s in syns)
        return syns

    def _stop(self, word: str, lang: str) -> bool:
        return word in _ZH_STOP if lang == "zh" else word.casefold() in _en_stop()

    # ---- operations ---------------------------------------------------------------------------------------
    def _candidates(self, toks: list[_Tok], lang: str) -> list[int]:
        return [i for i, t in enumerate(toks) if t.word and not t.protected and not self._stop(t.core, lang)]

    @staticmethod
    def _count(rate: float, n_words: int) -> int:
        return max(1, int(round(rate * n_words))) if rate > 0 else 0

    def synonym(self, toks, lang, rng):
        cands = self._candidates(toks, lang)
        rng.shuffle(cands)
        todo = self._count(self.synonym_rate, sum(t.word for t in toks))
        for i in cands:
            if todo == 0:
                break
            syns = self._synonyms(toks[i].core, lang)
            if syns:
                toks[i].core = rng.choice(syns)
                todo -= 1
        return toks

    def insert(self, toks, lang, rng):
        todo = self._count(self.insert_rate, sum(t.word for t in toks))
        cands = self._candidates(toks, lang)
        for _ in range(todo):
            options = [i for i in cands if self._synonyms(toks[i].core, lang)]
            if not options:
                break
            src = toks[rng.choice(options)]
            new = _Tok("", rng.choice(self._synonyms(src.core, lang)), "", True, False)
            # never inside a run of protected tokens ("Howard Shore", "2019 年"): that would split an entity
            slots = [
                p
                for p in range(len(toks) + 1)
                if not (0 < p < len(toks) and toks[p - 1].protected and toks[p].protected)
            ]
            pos = rng.choice(slots)
            toks.insert(pos, new)
            cands = [i + (i >= pos) for i in cands]
        return toks

    def swap(self, toks, lang, rng):
        movable = [i for i, t in enumerate(toks) if t.word and not t.protected]
        if len(movable) < 2:
            return toks
        for _ in range(self._count(self.swap_rate, sum(t.word for t in toks))):
            a, b = rng.sample(movable, 2)
            # punctuation stays where it was; only the words trade places
            toks[a].core, toks[b].core = toks[b].core, toks[a].core
        return toks

    def delete(self, toks, lang, rng):
        deletable = [i for i, t in enumerate(toks) if t.word and not t.protected]
        if not deletable or self.delete_rate <= 0:
            return toks
        gone = {i for i in deletable if rng.random() < self.delete_rate}
        if len(gone) == sum(t.word for t in toks):  # never delete every word
            gone.discard(rng.choice(sorted(gone)))
        for i in gone:
            toks[i].core = ""
        return toks

    def augment(self, text: str, rng: random.Random, op: str | None = None) -> str:
        """One augmented copy of `text` (possibly equal to it when nothing could change).

        Args:
            text: the example.
            rng: the random source (seeded by the caller).
            op: the operation; default one of `ops` (except back_translation) at random.

        Raises:
            ConfigError: unknown operation.
            DataError: a needed resource (WordNet, Cilin, jieba) is missing; `language_of(text)` is `other`.
        """
        lang = self.language_of(text)
        if lang not in LANGUAGES:
            raise DataError(
                f"cannot augment text in an unsupported script (only {', '.join(LANGUAGES)}): {text[:40]!r}"
            )
        eda = [o for o in self.ops if o in EDA_OPS]
        op = op or rng.choice(eda or list(EDA_OPS))
        if op not in EDA_OPS:
            raise ConfigError(f"data.augment.ops: '{op}' is not a word-level operation ({', '.join(EDA_OPS)})")
        toks = self._tokens(text, lang)
        return self._join(getattr(self, op)(toks, lang, rng), lang)


def _jieba():
    try:
        import jieba
    except ImportError:
        raise DataError("Chinese augmentation needs word segmentation: pip install jieba") from None
    jieba.setLogLevel(logging.WARNING)
    return jieba


def copies_for(labels: Sequence[str], num_per_example: float, per_class: dict | None, seed: int) -> list[int]:
    """How many augmented copies each example gets: the integer part of its class's multiplier, plus one more
    for a seeded share equal to the fractional part.

    Raises:
        ConfigError: a negative multiplier.
    """
    per_class = {str(k): float(v) for k, v in (per_class or {}).items()}
    for k, v in [("num_per_example", num_per_example), *((f"per_class.{c}", m) for c, m in per_class.items())]:
        if v < 0:
            raise ConfigError(f"data.augment.{k} must not be negative, got {v}")
    rng = random.Random(f"copies-{seed}")
    out = []
    for lab in labels:
        m = per_class.get(str(lab), num_per_example)
        out.append(int(math.floor(m)) + (1 if rng.random() < m - math.floor(m) else 0))
    return out


def augment_dataset(
    texts: Sequence[str],
    copies: Sequence[int],
    augmenter: Augmenter,
    seed: int,
    back_translator: Callable[[list[str]], list[str]] | None = None,
) -> list[tuple[int, str, str]]:
    """Augmented copies of `texts`: a list of (source index, new text, operation).

    Copies identical to their source (nothing could be changed) are left out; examples in an unsupported
    script are skipped with one warning.

    Args:
        texts: the training texts.
        copies: copies wanted per text (from `copies_for`).
        augmenter: the configured operations.
        seed: the augmentation seed.
        back_translator: callable translating a batch of texts there and back; needed when `back_translation`
            is one of the operations.

    Raises:
        ConfigError: back_translation requested without a translator.
        DataError: a missing resource (WordNet, Cilin, jieba).
    """
    if "back_translation" in augmenter.ops and back_translator is None:
        raise ConfigError(
            "data.augment.ops includes back_translation, but no translation model is configured "
            "(data.augment.back_translation.to_model / back_model)"
        )
    out: list[tuple[int, str, str]] = []
    bt_jobs: list[int] = []
    skipped = 0
    for i, (text, k) in enumerate(zip(texts, copies)):
        if k <= 0:
            continue
        if augmenter.language_of(text) not in LANGUAGES:
            skipped += 1
            continue
        for c in range(k):
            rng = random.Random(f"{seed}-{i}-{c}")
            op = rng.choice(list(augmenter.ops))
            if op == "back_translation":
                bt_jobs.append(i)
                continue
            new = augmenter.augment(text, rng, op)
            if new.strip() and new != text:
                out.append((i, new, op))
    if skipped:
        log.warning("augmentation skipped %d examples whose script is neither English nor Chinese", skipped)
    if bt_jobs:
        translated = back_translator([texts[i] for i in bt_jobs])
        out += [(i, t, "back_translation") for i, t in zip(bt_jobs, translated) if t.strip() and t != texts[i]]
    return out
