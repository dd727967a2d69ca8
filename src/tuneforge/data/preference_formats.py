"""Preference record formats (for DPO-family and KTO training) normalised to one of two shapes:

- paired: `{"prompt": [messages], "chosen": str, "rejected": str}`
- unpaired (KTO): `{"prompt": [messages], "completion": str, "label": bool}`

The prompt is a list of `{"role": system|user|assistant, "content": str}` messages (a system message only
first) ending with a user turn; chosen, rejected and completion are the text of an assistant answer.

Accepted forms (`data.format` auto, or forced by name):

- `alpaca` (LLaMA-Factory): instruction, optional input (joined to the instruction with a newline, as
  LLaMA-Factory does), system, history ([[q, a], ...]), and chosen + rejected; or output + kto_tag/label.
- `sharegpt` (LLaMA-Factory): conversations/messages ({from, value} or {role, content} turns), optional system,
  and chosen + rejected, each a message or a text.
- `kto` (LLaMA-Factory's KTO form): conversations/messages whose last (assistant) turn is the completion, plus a
  boolean kto_tag/label; forcing `kto` also reads TRL's and alpaca's unpaired columns.
- `trl`: prompt + chosen + rejected (texts, or a message list prompt and one-message chosen/rejected lists);
  chosen + rejected message lists alone (the implicit prompt: every turn but the last is shared); or prompt +
  completion + label (unpaired).

Every malformed record is a DataError naming the source, the record number (1-based) and the problem; with
`skipped` a list (data.bad_records=skip) it is listed there and left out. A file holds one kind of record:
a file mixing pairs and labelled single answers is a DataError whatever data.bad_records says."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tuneforge.data.columns import skip_hint
from tuneforge.data.sft_formats import _as_list, _conversation, _missing, _roles, _text, alpaca_history
from tuneforge.errors import DataError

FORMATS = ("alpaca", "sharegpt", "trl", "kto")
CONVERSATION_COLUMNS = ("conversations", "messages")
LABEL_COLUMNS = ("kto_tag", "label")
#: how an alpaca `input` is joined to its `instruction`: LLaMA-Factory's converter joins them with "\n"
INPUT_JOIN = "\n"


def _label_column(cols) -> str | None:
    return next((c for c in LABEL_COLUMNS if c in cols), None)


def _conv_column(cols) -> str | None:
    return next((c for c in CONVERSATION_COLUMNS if c in cols), None)


def detect_format(columns, source: str) -> str:
    """The form of a preference file from its columns; DataError when nothing fits."""
    cols = set(map(str, columns))
    if _conv_column(cols):
        return "kto" if _label_column(cols) and not {"chosen", "rejected"} & cols else "sharegpt"
    if "instruction" in cols:
        return "alpaca"
    if "prompt" in cols or {"chosen", "rejected"} <= cols:
        return "trl"
    raise DataError(
        f"{source}: cannot tell the preference data format from the columns ({', '.join(sorted(cols))}); expected "
        f"instruction + chosen/rejected (alpaca), conversations + chosen/rejected (sharegpt), "
        f"prompt + chosen/rejected or prompt + completion + label (trl), conversations/messages + kto_tag or "
        f"label (kto); or set data.format"
    )


def _present(row: dict, key: str | None) -> bool:
    return key is not None and not _missing(row.get(key))


def _row_kind(row: dict, fmt: str, label_col: str | None, file_kind: str) -> str:
    """paired, unpaired, or both (a record with chosen/rejected and a label or completion)."""
    if fmt == "kto":
        return "unpaired"
    paired = _present(row, "chosen") or _present(row, "rejected")
    unpaired = _present(row, label_col) or _present(row, "completion")
    if paired and unpaired:
        return "both"
    return "paired" if paired else "unpaired" if unpaired else file_kind


def _turn_keys(raw: list) -> tuple[str, str]:
    first = next((t for t in raw if isinstance(t, dict)), {})
    return ("from", "value") if "from" in first else ("role", "content")


def _messages(raw: Any, where: str, field: str, roles: dict, numbers: list | None) -> list[dict]:
    """A list of turns ({from, value} or {role, content}) as messages; an empty or missing list is an empty prompt."""
    raw = _as_list(raw)
    if _missing(raw) or (isinstance(raw, list) and not raw):
        raise DataError(f"{where}: the prompt is empty (field '{field}' is {'missing' if _missing(raw) else '[]'})")
    if not isinstance(raw, list):
        raise DataError(f"{where}: field '{field}' must be a list of turns, got {type(raw).__name__}")
    key_role, key_content = _turn_keys(raw)
    return _conversation(raw, f"{where}: field '{field}'", key_role, key_content, roles, numbers)


def _check_prompt(msgs: list[dict], where: str) -> list[dict]:
    if not msgs or not any(m["content"].strip() for m in msgs):
        raise DataError(f"{where}: the prompt is empty")
    for i, m in enumerate(msgs):
        if m["role"] == "system" and i != 0:
            raise DataError(f"{where}: a system message is allowed only first in the prompt (turn {i + 1})")
    if msgs[-1]["role"] != "user":
        raise DataError(
            f"{where}: the prompt's last turn (turn {len(msgs)}) is the {msgs[-1]['role']}'s; it must be the user's"
        )
    return msgs


def _with_system(msgs: list[dict], system: Any, where: str, numbers: list | None) -> list[dict]:
    if _missing(system) or not isinstance(system, str) or not system.strip():
        return msgs
    if msgs and msgs[0]["role"] == "system":
        return msgs
    return [{"role": "system", "content": _text(system, f"{where}: field 'system'", numbers=numbers)}, *msgs]


def _answer(v: Any, where: str, field: str, noun: str, roles: dict, numbers: list | None) -> str:
    """The text of an answer: a text, an assistant message ({from, value} / {role, content}) or a list holding one."""
    v = _as_list(v)
    if _missing(v):
        raise DataError(f"{where}: no {noun} (field '{field}' is missing)")
    w = f"{where}: the {noun} (field '{field}')"
    if isinstance(v, list) and v and all(isinstance(m, dict) for m in v) and "type" not in v[0]:
        if len(v) != 1:
            raise DataError(f"{w} must be one assistant message, got {len(v)} messages")
        v = v[0]
    if isinstance(v, dict):
        key_role, key_content = ("from", "value") if "from" in v else ("role", "content")
        if key_role in v:
            role = str(v[key_role]).lower()
            if role not in roles:
                raise DataError(
                    f"{w}: unknown role '{str(v[key_role])[:40]}'; map it with data.roles "
                    f"(known: {', '.join(sorted(roles))})"
                )
            if roles[role] != "assistant":
                raise DataError(f"{w} must be the assistant's message, not the {roles[role]}'s")
        v = v.get(key_content)
        if _missing(v):
            raise DataError(f"{w} has no '{key_content}'")
    return _text(v, w, numbers=numbers)


def _label(v: Any, where: str, field: str) -> bool:
    """A KTO label: a boolean, "true"/"false" or 1/0 (1.0/0.0 too: pandas makes an int column float when a record
    lacks it)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if _missing(v):
        raise DataError(f"{where}: no label (field '{field}' is missing)")
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    if isinstance(v, (int, float, np.integer, np.floating)) and float(v) in (0.0, 1.0):
        return float(v) == 1.0
    shown = repr(v.item() if isinstance(v, np.generic) else _as_list(v))[:40]
    raise DataError(f"{where}: the label (field '{field}') must be a boolean (true/false or 1/0), got {shown}")


def pair_margin(v: Any, where: str) -> float:
    """A pair's `margin` (how far the chosen answer's reward must exceed the rejected one's, as in TRL's reward
    data): a finite number. A missing, non-numeric or infinite value is a DataError naming the record."""
    if isinstance(v, (bool, np.bool_)):
        raise DataError(f"{where}: the margin (field 'margin') must be a number, got {v!r}")
    if _missing(v):
        raise DataError(f"{where}: no margin (field 'margin' is missing; the file has a margin column)")
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise DataError(f"{where}: the margin (field 'margin') must be a number, got {v[:40]!r}") from None
    if not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(float(v)):
        shown = repr(v.item() if isinstance(v, np.generic) else _as_list(v))[:40]
        raise DataError(f"{where}: the margin (field 'margin') must be a finite number, got {shown}")
    return float(v)


def _pair(where: str, prompt: list[dict], chosen: str, rejected: str) -> dict:
    if chosen.strip() == rejected.strip():
        raise DataError(f"{where}: the chosen and rejected answers are identical")
    return {"prompt": _check_prompt(prompt, where), "chosen": chosen, "rejected": rejected}


def _alpaca_prompt(row: dict, where: str, numbers: list | None) -> list[dict]:
    msgs: list[dict] = _with_system([], row.get("system"), where, numbers)
    msgs += alpaca_history(row, where, numbers)
    parts = [
        _text(row.get(f), f"{where}: field '{f}'", required=False, numbers=numbers) for f in ("instruction", "input")
    ]
    user = INPUT_JOIN.join(p for p in parts if p.strip())
    if not user.strip():
        raise DataError(f"{where}: the prompt is empty (field 'instruction' is empty)")
    msgs.append({"role": "user", "content": user})
    return msgs


def _trl_prompt(v: Any, where: str, roles: dict, numbers: list | None) -> list[dict]:
    v = _as_list(v)
    if isinstance(v, list):
        return _messages(v, where, "prompt", roles, numbers)
    if _missing(v) or (isinstance(v, str) and not v.strip()):
        raise DataError(f"{where}: the prompt is empty (field 'prompt' is {'missing' if _missing(v) else 'empty'})")
    return [{"role": "user", "content": _text(v, f"{where}: field 'prompt'", numbers=numbers)}]


def _implicit_pair(row: dict, where: str, roles: dict, numbers: list | None) -> dict:
    """TRL's implicit prompt: chosen and rejected are whole conversations sharing every turn but the last."""
    for field, noun in (("chosen", "chosen answer"), ("rejected", "rejected answer")):
        v = _as_list(row.get(field))
        if _missing(v):
            raise DataError(f"{where}: no {noun} (field '{field}' is missing)")
        if not isinstance(v, list):
            raise DataError(
                f"{where}: with no 'prompt' field, '{field}' must be a list of messages that share the prompt "
                f"turns (TRL's implicit prompt), got {type(v).__name__}"
            )
    chosen = _messages(row.get("chosen"), where, "chosen", roles, numbers)
    rejected = _messages(row.get("rejected"), where, "rejected", roles, numbers)
    if chosen == rejected:
        raise DataError(f"{where}: the chosen and rejected answers are identical")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    for field, msgs in (("chosen", chosen), ("rejected", rejected)):
        if len(msgs) != shared + 1 or msgs[-1]["role"] != "assistant":
            raise DataError(
                f"{where}: field '{field}' must be the shared prompt turns and one assistant answer "
                f"(TRL's implicit prompt); it differs from the other answer at turn {shared + 1} of {len(msgs)}"
            )
    if shared == 0:
        raise DataError(f"{where}: the prompt is empty (chosen and rejected share no turn)")
    return _pair(where, chosen[:shared], chosen[-1]["content"], rejected[-1]["content"])


def _record(row: dict, kind: str, fmt: str, cols: set, where: str, roles: dict, numbers: list | None) -> dict:
    """One row in the normalised shape of `kind`; DataError when it does not fit."""
    if kind == "both":
        raise DataError(
            f"{where}: has both chosen/rejected answers and a KTO label or completion; a record is either a pair or "
            f"one labelled answer"
        )
    conv = _conv_column(cols)
    label_col = _label_column(cols)
    if kind == "unpaired":
        if label_col is None:
            raise DataError(f"{where}: no label (a KTO record needs a kto_tag or label field)")
        if fmt in ("sharegpt", "kto") and conv is not None:
            msgs = _with_system(
                _messages(row.get(conv), where, conv, roles, numbers), row.get("system"), where, numbers
            )
            if msgs[-1]["role"] != "assistant":
                raise DataError(
                    f"{where}: the last turn of field '{conv}' (turn {len(msgs)}) is the {msgs[-1]['role']}'s; it must "
                    f"be the assistant's answer that the label judges"
                )
            prompt, completion = msgs[:-1], msgs[-1]["content"]
        elif fmt == "alpaca" or (fmt == "kto" and "instruction" in cols):
            prompt = _alpaca_prompt(row, where, numbers)
            completion = _answer(row.get("output"), where, "output", "completion", roles, numbers)
        else:
            prompt = _trl_prompt(row.get("prompt"), where, roles, numbers)
            completion = _answer(row.get("completion"), where, "completion", "completion", roles, numbers)
        label = _label(row.get(label_col), where, label_col)
        return {"prompt": _check_prompt(prompt, where), "completion": completion, "label": label}
    if fmt == "trl" and "prompt" not in cols:
        return _implicit_pair(row, where, roles, numbers)
    if fmt == "alpaca":
        prompt = _alpaca_prompt(row, where, numbers)
    elif fmt == "sharegpt":
        prompt = _with_system(_messages(row.get(conv), where, conv, roles, numbers), row.get("system"), where, numbers)
    else:
        prompt = _trl_prompt(row.get("prompt"), where, roles, numbers)
    chosen = _answer(row.get("chosen"), where, "chosen", "chosen answer", roles, numbers)
    rejected = _answer(row.get("rejected"), where, "rejected", "rejected answer", roles, numbers)
    return _pair(where, prompt, chosen, rejected)


_NEEDS = {
    "alpaca": (("instruction",), "an 'instruction' column"),
    "sharegpt": (CONVERSATION_COLUMNS, "a 'conversations' or 'messages' column"),
    "trl": (("prompt", "chosen", "rejected"), "a 'prompt' or 'chosen'/'rejected' column"),
    "kto": (LABEL_COLUMNS, "a 'kto_tag' or 'label' column"),
}


def parse_preference_records(
    frame: pd.DataFrame,
    fmt: str,
    source: str,
    *,
    roles: dict[str, str] | None = None,
    skipped: list | None = None,
    numbers: list | None = None,
    margins: bool = False,
) -> tuple[str, str, list[dict]]:
    """Normalise the rows of `frame` (as read by `read_table`) into preference records.

    Args:
        frame: the rows.
        fmt: `auto` or one of FORMATS.
        source: the data source, for messages.
        roles: extra role-name mapping (data.roles).
        skipped: None (data.bad_records=error): the first malformed record is an error. A list
            (data.bad_records=skip): malformed records are left out and `(record number, message)` appended.
        numbers: when a list, the fields whose number was turned into text are appended to it.
        margins: when the file has a `margin` column, each pair also gets `"margin": float` (`pair_margin`; a
            missing or non-numeric margin is a malformed record). Off: the column is ignored.

    Returns (kind, format, records): kind is `paired` or `unpaired`, records are dicts of that kind's shape.

    Raises DataError: a malformed record (its number and problem), a file mixing pairs and unpaired records, a
    format whose columns are missing."""
    roles = _roles(roles or {})
    cols = set(map(str, frame.columns))
    if fmt == "auto":
        fmt = detect_format(cols, source)
    if fmt not in FORMATS:
        raise DataError(f"data.format: unknown preference data format '{fmt}' (use auto, {', '.join(FORMATS)})")
    needed, what = _NEEDS[fmt]
    if not cols & set(needed):
        raise DataError(f"{source}: format '{fmt}' needs {what}; columns: {', '.join(sorted(cols))}")
    label_col = _label_column(cols)
    file_kind = "paired" if {"chosen", "rejected"} & cols or not (label_col or "completion" in cols) else "unpaired"
    rows = frame.to_dict("records")
    kinds = [_row_kind(row, fmt, label_col, file_kind) for row in rows]
    first = {k: kinds.index(k) + 1 for k in ("paired", "unpaired") if k in kinds}
    if len(first) == 2:
        raise DataError(
            f"{source}: mixes paired records (chosen/rejected, first: record {first['paired']}) and unpaired KTO "
            f"records (a label, first: record {first['unpaired']}); a data file holds one kind: split it in two"
        )
    kind = next(iter(first), file_kind)
    records: list[dict] = []
    for n, (row, row_kind) in enumerate(zip(rows, kinds), start=1):
        try:
            record = _record(row, row_kind, fmt, cols, f"{source}: record {n}", roles, numbers)
            if margins and "margin" in cols and "chosen" in record:
                record["margin"] = pair_margin(row.get("margin"), f"{source}: record {n}")
        except DataError as exc:
            if skipped is None:
                raise DataError(f"{exc} {skip_hint()}") from None
            skipped.append((n, str(exc)))
            continue
        records.append(record)
    return kind, fmt, records
