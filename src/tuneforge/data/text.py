"""Text helpers shared by cleaning, augmentation and reports: normalisation and script-based language detection."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
# CJK unified ideographs (+ extension A and compatibility ideographs): enough to tell Chinese from Latin text
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_LETTER = re.compile(r"[^\W\d_]")

LANGUAGES = ("en", "zh")


def normalize(text: str) -> str:
    """The key under which texts count as exact duplicates: NFKC (full-width forms, ligatures), case-folded,
    whitespace collapsed and stripped.

    Args:
        text: any string (non-strings are converted with `str`).
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", str(text)).casefold()).strip()


def detect_language(text: str) -> str:
    """Language of `text` from its script: `zh` when Han characters make up at least a fifth of the letters,
    `en` when Latin letters dominate, `other` otherwise (Cyrillic, Arabic, ..., or no letters at all).

    Args:
        text: the text.
    """
    text = str(text)
    letters = len(_LETTER.findall(text))
    if letters == 0:
        return "other"
    han = len(_HAN.findall(text))
    if han >= 0.2 * letters:
        return "zh"
    if len(_LATIN.findall(text)) >= 0.5 * letters:
        return "en"
    return "other"


def has_han(text: str) -> bool:
    return bool(_HAN.search(text))


#: Han characters, counted: the unified ideographs with extension A, the compatibility ideographs, and the
#: supplementary planes' extensions B-F and compatibility supplement
_HAN_ALL = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


def count_han(text: str) -> int:
    """The number of Chinese (Han) characters in `text`: what "characters" means in tokens-per-character figures
    of Chinese text."""
    return len(_HAN_ALL.findall(str(text)))


def chinese_stats(texts: list[str], token_counts: list[int]) -> dict | None:
    """For the texts that hold Han characters: how many, their Chinese characters, their tokens (`token_counts`, one
    per text, in the same order) and tokens per Chinese character; None when no text holds one. What a data report
    shows so a user sees what a tokenizer spends on Chinese (and what a vocabulary expansion would save)."""
    han = [count_han(t) for t in texts]
    if not sum(han):
        return None
    tokens = sum(n for n, h in zip(token_counts, han) if h)
    return {
        "texts": sum(1 for h in han if h),
        "chinese_characters": sum(han),
        "tokens": tokens,
        "tokens_per_chinese_character": round(tokens / sum(han), 3),
    }
