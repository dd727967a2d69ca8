"""SFT record formats (alpaca, sharegpt, messages, text) normalised to one shape: a list of
{"role": system|user|assistant, "content": str} messages, or a plain text for continued pre-training.

Every malformed record is a DataError that names the source, the record number (1-based, the line of a
jsonl file) and the field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tuneforge.data.columns import skip_hint
from tuneforge.errors import DataError

FORMATS = ("alpaca", "sharegpt", "messages", "text")
KNOWN_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _as_list(v: Any):
    # parquet and datasets give numpy arrays where json gives lists
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    return v


def _text(v: Any, where: str, required: bool = True, numbers: list | None = None) -> str:
    """The text of a field. Numbers (`"content": 4`) become their text ("4"; 4.0 -> "4"), recorded in
    `numbers`; bytes are decoded as UTF-8; anything else that is not text is a DataError naming `where`."""
    if _missing(v):
        if required:
            raise DataError(f"{where} is missing")
        return ""
    v = _as_list(v)
    if isinstance(v, list) and not all(isinstance(p, dict) for p in v):
        raise DataError(f"{where} must be text, got a list")
    if isinstance(v, list):  # OpenAI content parts: [{"type": "text", "text": ...}]
        parts = []
        for p in v:
            if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                raise DataError(f"{where}: only text content is supported (got {str(p)[:60]})")
        v = "".join(parts)
    if isinstance(v, (bytes, bytearray)):
        try:
            v = bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{where} holds bytes that are not UTF-8 text") from None
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
        v = str(int(v)) if float(v).is_integer() and abs(float(v)) < 2**53 else str(v)
        if numbers is not None:
            numbers.append(where)
    if not isinstance(v, str):
        raise DataError(f"{where} must be text, got {type(v).__name__}")
    if required and not v.strip():
        raise DataError(f"{where} is empty")
    return v


def detect_format(columns, conversation_column: str | None, text_column: str, source: str | None = None) -> str:
    """Guess the format from the columns; raise DataError when nothing fits."""
    cols = set(map(str, columns))
    conv = conversation_column if conversation_column in cols else None
    if conv is None:
        conv = "conversations" if "conversations" in cols else "messages" if "messages" in cols else None
    if conv is not None:
        return "__conv__:" + conv
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if text_column in cols:
        return "text"
    raise DataError(
        f"{source + ': ' if source else ''}cannot tell the data format from the columns "
        f"({', '.join(sorted(cols))}); expected "
        f"instruction/output (alpaca), conversations (sharegpt), messages, or '{text_column}' (text); "
        f"or set data.format"
    )


def _check_conversation(msgs: list[dict], where: str) -> list[dict]:
    if not any(m["role"] == "assistant" for m in msgs):
        raise DataError(f"{where}: no assistant turn to learn from")
    for i, m in enumerate(msgs):
        if m["role"] == "system" and i != 0:
            raise DataError(f"{where}: a system message is allowed only first (turn {i + 1})")
    first_assistant = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    if not any(m["role"] == "user" for m in msgs[:first_assistant]):
        raise DataError(f"{where}: the first assistant turn (turn {first_assistant + 1}) has no user turn before it")
    return msgs


def _roles(extra: dict[str, str]) -> dict[str, str]:
    roles = dict(KNOWN_ROLES)
    for k, v in extra.items():
        if v not in ("system", "user", "assistant"):
            raise DataError(f"data.roles.{k}: '{v}' must be system, user or assistant")
        roles[k.lower()] = v
    return roles


def _conversation(
    raw: Any, where: str, key_role: str, key_content: str, roles: dict[str, str], numbers: list | None = None
) -> list[dict]:
    raw = _as_list(raw)
    if _missing(raw):
        raise DataError(f"{where} is missing")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where} must be a non-empty list of turns")
    msgs = []
    for j, turn in enumerate(raw):
        w = f"{where}[{j}]"
        if not isinstance(turn, dict):
            raise DataError(f"{w} must be a mapping with '{key_role}' and '{key_content}'")
        if key_role not in turn:
            raise DataError(f"{w} has no '{key_role}' (keys: {', '.join(map(str, turn))})")
        role = str(turn[key_role]).lower()
        if role not in roles:
            raise DataError(
                f"{w}.{key_role}: unknown role '{str(turn[key_role])[:40]}'; map it with data.roles "
                f"(known: {', '.join(sorted(roles))})"
            )
        content = _text(turn.get(key_content), f"{w}.{key_content}", required=roles[role] != "system", numbers=numbers)
        msgs.append({"role": roles[role], "content": content})
    return msgs


def parse_records(
    df: pd.DataFrame,
    fmt: str,
    source: str,
    *,
    conversation_column: str | None = None,
    text_column: str = "text",
    roles: dict[str, str] | None = None,
    skipped: list | None = None,
    numbers: list | None = None,
) -> tuple[str, list]:
    """Normalise the rows of `df` into conversations (list of messages) or texts.

    Args:
        df: the rows, as read by `read_table`.
        fmt: `auto` or one of FORMATS.
        source: the data source, for messages.
        conversation_column: column of sharegpt/messages conversations (default conversations/messages).
        text_column: column of the `text` format.
        roles: extra role-name mapping (data.roles).
        skipped: None (data.bad_records=error): the first malformed record is an error. A list
            (data.bad_records=skip): malformed records are left out and `(record number, message)` appended.
        numbers: when a list, the fields whose number was turned into text are appended to it.

    Returns (format, records): records are lists of messages, or strings for `text`.

    Raises DataError naming the record number and field of the first malformed record (and data.bad_records)."""
    roles = _roles(roles or {})
    cols = list(map(str, df.columns))
    if fmt == "auto":
        fmt = detect_format(cols, conversation_column, text_column, source)
    conv = None
    if fmt.startswith("__conv__:"):
        conv = fmt.split(":", 1)[1]
        first = next((_as_list(v) for v in df[conv] if isinstance(_as_list(v), list) and _as_list(v)), None)
        turn = first[0] if first else {}
        fmt = "sharegpt" if isinstance(turn, dict) and "from" in turn else "messages"
    elif fmt in ("sharegpt", "messages"):
        conv = conversation_column or ("conversations" if fmt == "sharegpt" else "messages")
    if fmt not in FORMATS:
        raise DataError(f"data.format: unknown format '{fmt}'")
    needed = {"alpaca": ["instruction", "output"], "text": [text_column]}.get(fmt, [conv])
    for c in needed:
        if c not in cols:
            key = {"text": "data.text_column"}.get(fmt, "data.conversation_column" if conv else "data.format")
            raise DataError(f"{source}: format '{fmt}' needs a column '{c}' (see {key}); columns: {', '.join(cols)}")
    records: list = []
    rows = df.to_dict("records")
    for n, row in enumerate(rows, start=1):
        try:
            record = _record(row, n, fmt, conv, source, text_column, roles, numbers)
        except DataError as exc:
            if skipped is None:
                raise DataError(f"{exc} {skip_hint()}") from None
            skipped.append((n, str(exc)))
            continue
        records.append(record)
    return fmt, records


def alpaca_history(row: dict, where: str, numbers: list | None) -> list[dict]:
    """An alpaca record's `history` ([[instruction, response], ...]) as user/assistant messages (none if missing)."""
    hist = _as_list(row.get("history"))
    hist = [] if _missing(hist) else hist
    if not isinstance(hist, list):
        raise DataError(f"{where}: field 'history' must be a list of [instruction, response] pairs")
    msgs = []
    for j, pair in enumerate(hist):
        pair = _as_list(pair)
        if not isinstance(pair, list) or len(pair) != 2:
            raise DataError(f"{where}: field 'history'[{j}] must be an [instruction, response] pair")
        for k, role in enumerate(("user", "assistant")):
            msgs.append(
                {"role": role, "content": _text(pair[k], f"{where}: field 'history'[{j}][{k}]", numbers=numbers)}
            )
    return msgs


def _record(
    row: dict,
    n: int,
    fmt: str,
    conv: str | None,
    source: str,
    text_column: str,
    roles: dict[str, str],
    numbers: list | None,
):
    """One row as a conversation (list of messages) or a text; DataError when it does not fit `fmt`."""
    where = f"{source}: record {n}"
    if fmt == "text":
        return _text(row.get(text_column), f"{where}: field '{text_column}'", numbers=numbers)
    if fmt == "alpaca":
        msgs = []
        system = row.get("system")
        if not _missing(system) and str(system).strip():
            msgs.append({"role": "system", "content": _text(system, f"{where}: field 'system'", numbers=numbers)})
        msgs += alpaca_history(row, where, numbers)
        instruction = _text(row.get("instruction"), f"{where}: field 'instruction'", numbers=numbers)
        extra = _text(row.get("input"), f"{where}: field 'input'", required=False, numbers=numbers)
        user = instruction + ("\n" + extra if extra.strip() else "")
        msgs.append({"role": "user", "content": user})
        output = _text(row.get("output"), f"{where}: field 'output'", numbers=numbers)
        msgs.append({"role": "assistant", "content": output})
    elif fmt == "sharegpt":
        msgs = _conversation(row.get(conv), f"{where}: field '{conv}'", "from", "value", roles, numbers)
        system = row.get("system")
        if not _missing(system) and isinstance(system, str) and system.strip() and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system})
    elif fmt == "messages":
        msgs = _conversation(row.get(conv), f"{where}: field '{conv}'", "role", "content", roles, numbers)
    else:
        raise DataError(f"data.format: unknown format '{fmt}'")
    return _check_conversation(msgs, where)
