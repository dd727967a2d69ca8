"""The builtin data sets taken from LLaMA-Factory's demo files (Apache-2.0): preference pairs (`data.train:
builtin:dpo-en-demo` ...) and Alpaca instructions (`builtin:alpaca-zh-demo`, `builtin:alpaca-en-demo`), which `make
install` extracts from its source distribution on PyPI (requirements/fetch_preference_data.py) into
`<venv>/share/tuneforge/preference/`. They are read from there and never downloaded at run time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from tuneforge.errors import DataError

#: name -> (file, description); the files are LLaMA-Factory 0.9.5's data/<file> (the name is historical: the Alpaca
#: sets are instruction data, read by the SFT task)
PREFERENCE_BUILTINS: dict[str, tuple[str, str]] = {
    "dpo-en-demo": (
        "dpo_en_demo.json",
        "300 English preference pairs (sharegpt conversations with chosen/rejected answers) for DPO-family "
        "training; LLaMA-Factory's dpo_en_demo (Apache-2.0)",
    ),
    "dpo-zh-demo": (
        "dpo_zh_demo.json",
        "300 Chinese preference pairs (sharegpt conversations with chosen/rejected answers) for DPO-family "
        "training; LLaMA-Factory's dpo_zh_demo (Apache-2.0)",
    ),
    "kto-en-demo": (
        "kto_en_demo.json",
        "300 English conversations whose last answer is labelled desirable or not (150 each) for KTO; "
        "LLaMA-Factory's kto_en_demo (Apache-2.0)",
    ),
    "alpaca-zh-demo": (
        "alpaca_zh_demo.json",
        "1,000 Chinese instructions with answers (alpaca: instruction/input/output) for SFT; LLaMA-Factory's "
        "alpaca_zh_demo (Apache-2.0)",
    ),
    "alpaca-en-demo": (
        "alpaca_en_demo.json",
        "999 English instructions with answers (alpaca: instruction/input/output) for SFT; LLaMA-Factory's "
        "alpaca_en_demo (Apache-2.0)",
    ),
}


def preference_data_dir() -> Path:
    """Where `make install` puts the files: the environment's share/tuneforge/preference/."""
    return Path(sys.prefix) / "share" / "tuneforge" / "preference"


def read_preference_builtin(name: str, directory: Path | None = None) -> pd.DataFrame:
    """The records of builtin preference set `name` (without `builtin:`), one row per record, as its file has them
    (parse them with `preference_formats.parse_preference_records`). `directory` defaults to
    `preference_data_dir()`. Raises DataError for an unknown name, or a file missing or unreadable."""
    if name not in PREFERENCE_BUILTINS:
        raise DataError(
            f"unknown builtin preference data 'builtin:{name}'; available: "
            f"{', '.join('builtin:' + n for n in PREFERENCE_BUILTINS)}"
        )
    path = Path(directory or preference_data_dir()) / PREFERENCE_BUILTINS[name][0]
    if not path.is_file():
        raise DataError(
            f"builtin data 'builtin:{name}' is not installed ({path} is missing): run `make install`, which "
            f"extracts it from LLaMA-Factory's source distribution (requirements/fetch_preference_data.py)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"builtin data 'builtin:{name}': {path} cannot be read ({type(exc).__name__}); delete it and run "
            f"`make install` again"
        ) from None
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
        raise DataError(
            f"builtin data 'builtin:{name}': {path} is not a list of records; delete it and run `make install` again"
        )
    return pd.DataFrame(data)
