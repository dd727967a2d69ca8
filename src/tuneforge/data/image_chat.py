"""Vision-language chat records (any number of images per conversation, or none) in three formats, every image
checked before training (`check_images`), normalised to one shape (`ImageChat`).

- LLaMA-Factory sharegpt: ``{"messages"|"conversations": [{"role"/"from", "content"/"value": "<image>..."}],
  "images": [path, ...]}``: the ``<image>`` placeholders of the texts, in order, are the ``images`` in order.
- LLaMA-Factory alpaca: ``{"instruction", "input", "output", "images", "system"?, "history"?}``, the placeholders in
  instruction/input/history.
- OpenAI-style content parts: ``{"type": "text", "text"}``, ``{"type": "image", "image"|"url"|"path": path}``,
  ``{"type": "image_url", "image_url": {"url": ...} | ...}``; a bare ``{"type": "image"}`` (Hugging Face style)
  takes the next entry of ``images``, as a placeholder does. ``data:`` URLs are kept; a remote URL is an error.

Shape: ``messages = [{"role": system|user|assistant, "content": [{"type": "text", "text": str} | {"type": "image",
"index": i}]}]`` (parts in order; an assistant turn is text only), ``images[i]`` the absolute path (relative paths are
relative to the data file's directory) or ``data:`` URL of image ``i``, in order of appearance.

Why every image is opened up front: otherwise a missing, truncated or unreadable image, or placeholders that do not
match the images ("image features and image tokens do not match"), surfaces only when the data loader reaches it, and
the run crashes mid-training (hiyouga/LLaMA-Factory #8329, #9313; unslothai/unsloth #2251). Here each is one line
naming the file, record and image before anything trains, or (data.bad_records=skip) the record is left out, listed."""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageOps

from tuneforge.data import sft_formats as sft
from tuneforge.data.columns import skip_hint
from tuneforge.data.images.opening import image_reason, to_rgb
from tuneforge.errors import ConfigError, DataError, first_line

FORMATS = ("sharegpt", "alpaca", "messages")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class ImageOptions:
    """How images are brought to size: larger than `max_pixels` (width x height) are downscaled, smaller than
    `min_pixels` upscaled, both keeping the aspect ratio. `placeholder` marks an image's place in a text."""

    max_pixels: int | None = None
    min_pixels: int | None = None
    placeholder: str = "<image>"

    def __post_init__(self) -> None:
        for name in ("max_pixels", "min_pixels"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive whole number of pixels (width x height), got {v!r}")
        if self.max_pixels and self.min_pixels and self.min_pixels > self.max_pixels:
            raise ConfigError(f"min_pixels ({self.min_pixels}) is larger than max_pixels ({self.max_pixels})")
        if not isinstance(self.placeholder, str) or not self.placeholder.strip():
            raise ConfigError(f"placeholder must be a non-empty text such as '<image>', got {self.placeholder!r}")


@dataclass
class ImageChat:
    """One conversation: `messages` whose image parts index `images`; `record`: its 1-based number in the file."""

    messages: list[dict]
    images: list[str]
    record: int | None = None


class _Unreadable(Exception):
    """Why an image cannot be used, in one line (becomes a DataError naming the record and image)."""


def _kind(v: Any) -> str:
    return "None" if v is None else type(v).__name__


def _ref(v: Any, where: str, base_dir: Path) -> str:
    """An absolute image path, or a data URL as given; DataError naming `where` if not a string, empty or remote."""
    if not isinstance(v, str):
        raise DataError(f"{where} must be an image path (a string), got {_kind(v)}")
    ref = v.strip()
    if not ref:
        raise DataError(f"{where} is an empty image path")
    if ref[:5].lower() == "data:":
        return ref
    if ref[:7].lower() == "file://":
        ref = urllib.parse.unquote(urllib.parse.urlparse(ref).path)
    elif _SCHEME.match(ref):
        raise DataError(f"{where}: {ref[:80]} is a remote URL; training never downloads: save it, give its path")
    p = Path(ref).expanduser()
    return os.path.normpath(p if p.is_absolute() else Path(base_dir).absolute() / p)


def _split(text: str, placeholder: str) -> list[tuple]:
    """A text as pieces: ("text", str) and ("slot",) for each placeholder (the next image of the `images` list)."""
    out: list[tuple] = []
    for k, piece in enumerate(text.split(placeholder)):
        out += [("slot",)] * (k > 0) + [("text", piece)] * (piece != "")
    return out


def _parts(raw: list, where: str, placeholder: str, base_dir: Path) -> list[tuple]:
    """OpenAI-style content parts as pieces: ("text", str), ("slot",), ("ref", path)."""
    out: list[tuple] = []
    for k, part in enumerate(raw):
        w = f"{where}[{k}]"
        if not isinstance(part, dict):
            raise DataError(f"{w} must be a content part ({{'type': 'text'|'image'|'image_url', ...}})")
        part = {key: v for key, v in part.items() if not sft._missing(v)}  # parquet structs fill absent keys with None
        kind = part.get("type") or next((t for t in ("text", "image", "image_url") if t in part), None)
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise DataError(f"{w}.text must be text, got {_kind(part.get('text'))}")
            out += _split(part["text"], placeholder)
        elif kind == "image":
            key = next((key for key in ("image", "url", "path") if key in part), None)
            out.append(("slot",) if key is None else ("ref", _ref(part[key], f"{w}.{key}", base_dir)))
        elif kind == "image_url":
            url, key = part.get("image_url"), "image_url"
            if isinstance(url, dict):
                url, key = url.get("url"), "image_url.url"
            out.append(("ref", _ref(url, f"{w}.{key}", base_dir)))
        else:
            raise DataError(f"{w}: unsupported content part type {str(kind)[:30]!r} (use text, image, image_url)")
    return out


def _conversation_turns(raw: Any, where: str, roles: dict, placeholder: str, base_dir: Path) -> list[tuple]:
    """A sharegpt/messages conversation as turns (role, pieces, where); turns take role/content or from/value."""
    raw = sft._as_list(raw)
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where} {'is missing' if sft._missing(raw) else 'must be a non-empty list of turns'}")
    turns = []
    for j, turn in enumerate(raw):
        w = f"{where}[{j}]"
        if not isinstance(turn, dict):
            raise DataError(f"{w} must be a mapping with 'role' and 'content' (or 'from' and 'value')")
        turn = {key: v for key, v in turn.items() if not sft._missing(v)}
        rk = "role" if "role" in turn else "from" if "from" in turn else None
        if rk is None:
            raise DataError(f"{w} has no 'role' (or 'from') (keys: {', '.join(map(str, turn))})")
        name = str(turn[rk])
        if name.lower() not in roles:
            known = ", ".join(sorted(roles))
            raise DataError(f"{w}.{rk}: unknown role '{name[:40]}'; map it with data.roles (known: {known})")
        role = roles[name.lower()]
        ck = next((key for key in ("content", "value") if key in turn), "value" if rk == "from" else "content")
        content = sft._as_list(turn.get(ck))
        if sft._missing(content) and role != "system":
            raise DataError(f"{w}.{ck} is missing")
        if isinstance(content, list):
            pieces = _parts(content, f"{w}.{ck}", placeholder, base_dir)
        else:
            pieces = _split(sft._text(content, f"{w}.{ck}", required=False), placeholder)
        turns.append((role, pieces, f"{w}.{ck}"))
    return turns


def _alpaca_turns(row: dict, where: str, placeholder: str) -> list[tuple]:
    """An alpaca record (system, history, instruction + input, output) as turns (role, pieces, where)."""
    texts = []
    system = row.get("system")
    if not sft._missing(system) and str(system).strip():
        texts.append(("system", sft._text(system, f"{where}: field 'system'"), f"{where}: field 'system'"))
    for j, m in enumerate(sft.alpaca_history(row, where, None)):
        texts.append((m["role"], m["content"], f"{where}: field 'history'[{j // 2}][{j % 2}]"))
    instruction = sft._text(row.get("instruction"), f"{where}: field 'instruction'")
    extra = sft._text(row.get("input"), f"{where}: field 'input'", required=False)
    texts.append(("user", instruction + ("\n" + extra if extra.strip() else ""), f"{where}: field 'instruction'"))
    texts.append(("assistant", sft._text(row.get("output"), f"{where}: field 'output'"), f"{where}: field 'output'"))
    return [(role, _split(text, placeholder), w) for role, text, w in texts]


def _image_list(v: Any, where: str, base_dir: Path) -> list[str]:
    v = sft._as_list(v)
    v = [] if sft._missing(v) else [v] if isinstance(v, str) else v
    if not isinstance(v, list):
        raise DataError(f"{where} must be a list of image paths, got {_kind(v)}")
    return [_ref(x, f"{where}[{i}]", base_dir) for i, x in enumerate(v)]


def _chat(turns: list[tuple], images: list[str], where: str, image_field: str, placeholder: str) -> tuple:
    """(messages, images) of a record's turns; DataError when its images do not fit its turns."""
    for role, pieces, w in turns:
        if role == "assistant" and any(p[0] != "text" for p in pieces):
            raise DataError(f"{w}: an image in an assistant turn (the model generates text only)")
        if role != "system" and not any(p[0] != "text" or p[1].strip() for p in pieces):
            raise DataError(f"{w} is empty")
    sft._check_conversation([{"role": t[0]} for t in turns], where)
    slots = sum(p[0] == "slot" for _, pieces, _ in turns for p in pieces)
    if slots != len(images):
        raise DataError(
            f"{where}: {slots} {placeholder} placeholder{'s' if slots != 1 else ''} in the texts but "
            f"{len(images)} image{'s' if len(images) != 1 else ''} in field '{image_field}': they must match one to one"
        )
    listed, refs, messages = iter(images), [], []
    for role, pieces, _ in turns:
        content: list[dict] = []
        for piece in pieces:
            if piece[0] == "text":
                if content and content[-1]["type"] == "text":
                    content[-1]["text"] += piece[1]
                else:
                    content.append({"type": "text", "text": piece[1]})
            else:
                refs.append(next(listed) if piece[0] == "slot" else piece[1])
                content.append({"type": "image", "index": len(refs) - 1})
        if role != "system" or content:
            messages.append({"role": role, "content": content})
    return messages, refs


def parse_image_chats(
    df: pd.DataFrame,
    fmt: str,
    source: str,
    *,
    base_dir: Path,
    conversation_column: str | None = None,
    image_column: str = "images",
    roles: dict[str, str] | None = None,
    skipped: list | None = None,
    placeholder: str = "<image>",
) -> tuple[str, list[ImageChat]]:
    """Normalise the rows of `df` (as read by `read_table`) into ImageChats, each with its 1-based `record` number.

    `fmt`: `auto` or one of FORMATS (sharegpt/messages differ only in their default conversation column; turns may use
    role/content or from/value, content a text or parts). Relative image paths are relative to `base_dir`; images are
    not opened (see check_images). `skipped`: None (data.bad_records=error): the first malformed record is a
    DataError; a list: malformed records are left out and `(record number, message)` appended."""
    roles = sft._roles(roles or {})
    cols = list(map(str, df.columns))
    conv = None
    if fmt == "auto":
        try:
            found = sft.detect_format(cols, conversation_column, "\0", source)  # "\0": never the text format
        except DataError:
            raise DataError(
                f"{source}: cannot tell the image-chat format from the columns ({', '.join(sorted(cols))}); expected "
                f"conversations (sharegpt), messages, or instruction/output (alpaca); or set data.format"
            ) from None
        if found.startswith("__conv__:"):
            conv = found.split(":", 1)[1]
            first = next((t for v in df[conv] if isinstance(t := sft._as_list(v), list) and t), [None])
            found = "sharegpt" if isinstance(first[0], dict) and "from" in first[0] else "messages"
        fmt = found
    elif fmt in ("sharegpt", "messages"):
        order = ("conversations", "messages") if fmt == "sharegpt" else ("messages", "conversations")
        conv = conversation_column or next((c for c in order if c in cols), order[0])
    if fmt not in FORMATS:
        raise DataError(f"data.format: '{fmt}' is not an image-chat format (use auto, {', '.join(FORMATS)})")
    for c in [conv] if conv else ["instruction", "output"]:
        if c not in cols:
            key = "data.conversation_column" if conv else "data.format"
            raise DataError(f"{source}: format '{fmt}' needs a column '{c}' (see {key}); columns: {', '.join(cols)}")
    chats = []
    for n, row in enumerate(df.to_dict("records"), start=1):
        where = f"{source}: record {n}"
        try:
            if conv:
                turns = _conversation_turns(row.get(conv), f"{where}: field '{conv}'", roles, placeholder, base_dir)
                system = row.get("system")
                if isinstance(system, str) and system.strip() and turns[0][0] != "system":
                    turns.insert(0, ("system", _split(system, placeholder), f"{where}: field 'system'"))
            else:
                turns = _alpaca_turns(row, where, placeholder)
            images = _image_list(row.get(image_column), f"{where}: field '{image_column}'", base_dir)
            messages, refs = _chat(turns, images, where, image_column, placeholder)
        except DataError as exc:
            if skipped is None:
                raise DataError(f"{exc} {skip_hint()}") from None
            skipped.append((n, str(exc)))
            continue
        chats.append(ImageChat(messages, refs, n))
    return fmt, chats


def _source(ref: str) -> str | io.BytesIO:
    """What Pillow opens for `ref`: the path of an existing, non-empty file, or the decoded bytes of a data URL."""
    if ref[:5].lower() == "data:":
        head, comma, body = ref.partition(",")
        if not comma:
            raise _Unreadable("a data URL without ',' before its data")
        data = urllib.parse.unquote_to_bytes(body)
        if head.lower().endswith(";base64"):
            text = "".join(urllib.parse.unquote(body).split()).replace("-", "+").replace("_", "/")
            try:
                data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _Unreadable(f"its base64 data cannot be decoded ({first_line(exc, 100)})") from None
        if not data:
            raise _Unreadable("the data URL holds no data")
        return io.BytesIO(data)
    if _SCHEME.match(ref):
        raise _Unreadable("a remote URL; training does not fetch images from the network")
    path = Path(ref)
    if not path.exists():
        raise _Unreadable("file not found")
    if path.is_dir():
        raise _Unreadable("is a directory, not an image file")
    if path.stat().st_size == 0:
        raise _Unreadable("the file is empty")
    return ref


def _decode(ref: str, keep: bool) -> Image.Image | tuple[int, int]:
    """Open `ref` with Pillow: verify, then a full load (verify misses truncated data). The image (upright by its
    EXIF orientation) when `keep`, else only its size. Raises _Unreadable."""
    src = _source(ref)
    try:
        with Image.open(src) as im:
            im.verify()
        if isinstance(src, io.BytesIO):
            src.seek(0)
        with Image.open(src) as im:
            im.load()
            out = ImageOps.exif_transpose(im) if keep else im.size
    except Image.DecompressionBombError as exc:
        raise _Unreadable(f"too large to open safely ({first_line(exc, 150)})") from None
    except Exception as exc:
        raise _Unreadable(image_reason(exc)) from None
    w, h = out.size if keep else out
    if w <= 0 or h <= 0:
        raise _Unreadable(f"zero width or height ({w}x{h})")
    return out


def _target_size(w: int, h: int, options: ImageOptions) -> tuple[int, int]:
    """(width, height) within max/min_pixels, keeping the aspect ratio; _Unreadable if too thin for max_pixels."""
    if options.max_pixels and w * h > options.max_pixels:
        s = math.sqrt(options.max_pixels / (w * h))
        size = (max(1, math.floor(w * s)), max(1, math.floor(h * s)))
        if size[0] * size[1] > options.max_pixels:
            raise _Unreadable(f"{w}x{h} cannot fit max_pixels={options.max_pixels} keeping its aspect ratio")
        return size
    if options.min_pixels and w * h < options.min_pixels:
        s = math.sqrt(options.min_pixels / (w * h))
        return math.ceil(w * s), math.ceil(h * s)
    return w, h


def check_images(
    chats: list[ImageChat],
    source: str,
    options: ImageOptions,
    skipped: list | None = None,
    numbers: list[int] | None = None,
) -> list[ImageChat]:
    """The chats whose images all open as training will open them (verify, full load, size within `options`).

    A missing file, directory, empty file, non-image, truncated or corrupt image, undecodable data URL, image too large
    to open safely (DecompressionBombError) or too thin for max_pixels is a one-line DataError 'source: record N:
    cannot read image <path>|K (data URL): <reason>', or, with `skipped` a list, the record is left out and `(N,
    message)` appended. N is `numbers[i]`, else the chat's `record`, else i + 1. Each file is opened once."""
    if numbers is not None and len(numbers) != len(chats):
        raise ValueError(f"check_images: {len(numbers)} numbers for {len(chats)} chats")
    problems: dict[str, str | None] = {}
    kept = []
    for i, chat in enumerate(chats):
        n = numbers[i] if numbers is not None else chat.record if chat.record is not None else i + 1
        message = None
        for k, ref in enumerate(chat.images):
            if ref not in problems:
                try:
                    _target_size(*_decode(ref, keep=False), options)
                    problems[ref] = None
                except _Unreadable as exc:
                    problems[ref] = str(exc)
            if problems[ref] is not None:
                name = f"{k + 1} (data URL)" if ref[:5].lower() == "data:" else ref
                message = f"{source}: record {n}: cannot read image {name}: {problems[ref]}"
                break
        if message is None:
            kept.append(chat)
        elif skipped is None:
            raise DataError(f"{message} {skip_hint()}")
        else:
            skipped.append((n, message))
    return kept


def load_image(ref: str, options: ImageOptions | None = None) -> Image.Image:
    """The image of `ref` (a path or a data URL), fully loaded, upright by its EXIF orientation, in RGB, resized
    (keeping the aspect ratio) to within options' max_pixels/min_pixels. DataError 'cannot read image <ref>:
    <reason>' when it cannot be used."""
    options = options or ImageOptions()
    try:
        im = _decode(ref, keep=True)
        size = _target_size(im.width, im.height, options)
    except _Unreadable as exc:
        raise DataError(f"cannot read image {'(data URL)' if ref[:5].lower() == 'data:' else ref}: {exc}") from None
    im = to_rgb(im)
    return im if size == im.size else im.resize(size, Image.Resampling.BICUBIC)
