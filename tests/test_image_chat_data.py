"""Image-chat data (tuneforge.data.image_chat): the three formats, LLaMA-Factory's mllm_demo, every bad record as
one line (or left out with data.bad_records=skip), and loading images to size."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tuneforge.data.image_chat import ImageChat, ImageOptions, check_images, load_image, parse_image_chats
from tuneforge.data.sources import read_table
from tuneforge.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

DEMO_DIR = Path(sys.prefix) / "share" / "tuneforge" / "preference"


def _img(path: Path, size=(6, 4), color=(200, 30, 40), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, fmt)
    return path


def _noise_bytes(fmt: str, size=(64, 48)) -> bytes:
    im = Image.frombytes("RGB", size, bytes((i * 37 + i // 7) % 256 for i in range(size[0] * size[1] * 3)))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _data_url(im: Image.Image, fmt="PNG") -> str:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def _read(tmp_path: Path, records: list[dict], name="data.jsonl") -> tuple[str, pd.DataFrame]:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path), read_table(str(path))


def test_llamafactory_mllm_demo_parses_and_every_image_opens():
    path = DEMO_DIR / "mllm_demo.json"
    if not path.is_file():
        pytest.skip(f"{path} is not installed (make install / requirements/fetch_preference_data.py)")
    raw = json.loads(path.read_text(encoding="utf-8"))
    fmt, chats = parse_image_chats(read_table(str(path)), "auto", str(path), base_dir=path.parent)
    assert fmt == "messages" and len(chats) == len(raw) == 6
    for chat, rec in zip(chats, raw):
        assert chat.images == [str(path.parent / p) for p in rec["images"]]  # relative to the file's directory
        placeholders = sum(m["content"].count("<image>") for m in rec["messages"])
        parts = [p for m in chat.messages for p in m["content"] if p["type"] == "image"]
        assert [p["index"] for p in parts] == list(range(placeholders)) == list(range(len(chat.images)))
        assert [m["role"] for m in chat.messages] == [m["role"] for m in rec["messages"]]
        assert all(p["type"] == "text" for m in chat.messages if m["role"] == "assistant" for p in m["content"])
    assert chats[0].messages[0]["content"] == [{"type": "image", "index": 0}, {"type": "text", "text": "Who are they?"}]
    assert chats[0].messages[2]["content"] == [
        {"type": "text", "text": "What are they doing?"},
        {"type": "image", "index": 1},
    ]
    assert chats[0].images == [str(path.parent / "mllm_demo_data" / "1.jpg")] * 2
    assert check_images(chats, str(path), ImageOptions()) == chats
    im = load_image(chats[1].images[0], ImageOptions(max_pixels=20_000))
    assert im.mode == "RGB" and im.width * im.height <= 20_000


def test_three_formats_normalise_to_the_same_shape(tmp_path):
    a, b = _img(tmp_path / "imgs" / "a.png"), _img(tmp_path / "imgs" / "b.jpg", (5, 7), fmt="JPEG")
    sharegpt = {
        "conversations": [
            {"from": "human", "value": "<image>What is this?"},
            {"from": "gpt", "value": "A square."},
            {"from": "human", "value": "And this?<image>"},
            {"from": "gpt", "value": "A circle."},
        ],
        "images": ["imgs/a.png", "imgs/b.jpg"],
    }
    alpaca = {
        "history": [["<image>What is this?", "A square."]],
        "instruction": "And this?",
        "input": "<image>",
        "output": "A circle.",
        "images": ["imgs/a.png", str(b)],
    }
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "imgs/a.png"},
                    {"type": "text", "text": "What "},  # adjacent texts are joined
                    {"type": "text", "text": "is this?"},
                ],
            },
            {"role": "assistant", "content": "A square."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this?"},
                    {"type": "image_url", "image_url": {"url": f"file://{b}"}},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A circle."}]},
        ]
    }
    bare = {  # Hugging Face style: image parts without a value take the `images` list in order
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": "A square."},
            {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image"}]},
            {"role": "assistant", "content": "A circle."},
        ],
        "images": ["imgs/a.png", "imgs/b.jpg"],
    }
    expected = [
        {"role": "user", "content": [{"type": "image", "index": 0}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A square."}]},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image", "index": 1}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A circle."}]},
    ]
    alpaca_expected = [dict(m) for m in expected]
    alpaca_expected[2] = {
        "role": "user",
        "content": [{"type": "text", "text": "And this?\n"}, {"type": "image", "index": 1}],
    }
    for name, record, fmt, want in [
        ("sharegpt", sharegpt, "sharegpt", expected),
        ("alpaca", alpaca, "alpaca", alpaca_expected),
        ("parts", parts, "messages", expected),
        ("bare", bare, "messages", expected),
    ]:
        text_only = {k: v for k, v in record.items() if k != "images"}  # a record without images is allowed
        text_only = json.loads(json.dumps(text_only).replace("<image>", ""))
        if name in ("parts", "bare"):
            text_only["messages"] = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
        source, df = _read(tmp_path, [record, text_only], f"{name}.jsonl")
        for asked in ("auto", fmt):
            got_fmt, chats = parse_image_chats(df, asked, source, base_dir=tmp_path)
            assert got_fmt == fmt, name
            assert chats[0] == ImageChat(want, [str(a), str(b)], 1), name
            assert chats[1].images == [] and chats[1].record == 2
            assert all(isinstance(m["content"], list) for m in chats[1].messages)
        assert check_images(chats, source, ImageOptions()) == chats


def test_parquet_content_parts_with_null_keys(tmp_path):
    # a parquet struct column gives every part every key, absent ones as None
    a = _img(tmp_path / "a.png")
    df = pd.DataFrame(
        {
            "messages": [
                [
                    {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Hi"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
                ]
            ],
            "images": [["a.png"]],
        }
    )
    df.to_parquet(tmp_path / "d.parquet")
    _, chats = parse_image_chats(read_table(str(tmp_path / "d.parquet")), "auto", "d", base_dir=tmp_path)
    assert chats[0].images == [str(a)] and chats[0].messages[0]["content"][0] == {"type": "image", "index": 0}


@pytest.fixture
def files(tmp_path):
    _img(tmp_path / "good.png")
    (tmp_path / "adir").mkdir()
    (tmp_path / "notes.png").write_text("just some text\n", encoding="utf-8")
    jpeg, png = _noise_bytes("JPEG"), _noise_bytes("PNG")
    (tmp_path / "trunc.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "trunc.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "corrupt.png").write_bytes(png[:60] + bytes(b ^ 0x5A for b in png[60:]))
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path


def _lf(images, user="<image>Describe it.", assistant="A thing."):
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
        "images": images,
    }


def _oa(part, assistant="A thing."):
    return {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Look:"}, part]},
            {"role": "assistant", "content": assistant},
        ]
    }


# (id, bad record, stage that rejects it, what its message must say; {d} is the data directory)
BAD = [
    ("missing-file", _lf(["nope.png"]), "check", ["{d}/nope.png", "file not found"]),
    ("directory", _lf(["adir"]), "check", ["{d}/adir", "is a directory"]),
    ("not-an-image", _lf(["notes.png"]), "check", ["{d}/notes.png", "not an image file"]),
    ("truncated-jpeg", _lf(["trunc.jpg"]), "check", ["{d}/trunc.jpg", "truncated"]),
    ("truncated-png", _lf(["trunc.png"]), "check", ["{d}/trunc.png", "cannot read image"]),
    ("corrupt-bytes", _lf(["corrupt.png"]), "check", ["{d}/corrupt.png", "cannot read image"]),
    ("empty-file", _lf(["empty.png"]), "check", ["{d}/empty.png", "the file is empty"]),
    (
        "bad-base64",
        _lf(["good.png", "data:image/png;base64,@@not*base64@@"], "<image><image>Compare."),
        "check",
        ["image 2 (data URL)", "base64"],
    ),
    (
        "data-url-not-image",
        _oa({"type": "image_url", "image_url": "data:image/png;base64,aGVsbG8="}),
        "check",
        ["image 1 (data URL)", "not an image file"],
    ),
    ("remote-http", _lf(["http://example.com/cat.png"]), "parse", ["field 'images'[0]", "remote URL"]),
    (
        "remote-https-part",
        _oa({"type": "image_url", "image_url": {"url": "https://example.com/x.jpg"}}),
        "parse",
        ["field 'messages'[0].content[1].image_url.url", "remote URL"],
    ),
    (
        "fewer-placeholders",
        _lf(["good.png", "good.png"]),
        "parse",
        ["1 <image> placeholder in", "2 images in field 'images'"],
    ),
    (
        "more-placeholders",
        _lf(["good.png"], "<image><image>Both?"),
        "parse",
        ["2 <image> placeholders", "but 1 image in"],
    ),
    ("no-images-listed", _lf(None), "parse", ["1 <image> placeholder", "0 images in field 'images'"]),
    (
        "image-in-assistant",
        _lf(["good.png"], "Describe.", "<image>"),
        "parse",
        ["field 'messages'[1].content", "an image in an assistant turn"],
    ),
    (
        "image-part-in-assistant",
        _oa({"type": "text", "text": "?"}, [{"type": "image", "image": "good.png"}]),
        "parse",
        ["field 'messages'[1].content", "an image in an assistant turn"],
    ),
    (
        "non-string-part",
        _oa({"type": "image", "image": 123}),
        "parse",
        ["field 'messages'[0].content[1].image", "must be an image path (a string), got int"],
    ),
    ("non-string-entry", _lf([{"path": "good.png"}]), "parse", ["field 'images'[0]", "got dict"]),
    ("empty-path", _lf([""]), "parse", ["field 'images'[0] is an empty image path"]),
    (
        "empty-path-part",
        _oa({"type": "image_url", "image_url": {"url": "  "}}),
        "parse",
        ["content[1].image_url.url is an empty image path"],
    ),
    ("unsupported-part", _oa({"type": "video", "video": "v.mp4"}), "parse", ["content[1]", "unsupported content part"]),
    ("empty-user-turn", _lf([], ""), "parse", ["field 'messages'[0].content is empty"]),
    (
        "no-assistant",
        {"messages": [{"role": "user", "content": "<image>"}], "images": ["good.png"]},
        "parse",
        ["no assistant turn"],
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_record_is_one_line_or_left_out(files, case):
    _, record, stage, needles = case
    good = _lf(["good.png"])
    source, df = _read(files, [good, record, good])
    needles = [n.format(d=files) for n in needles] + [f"{source}: record 2"]

    def run(skipped):
        _, chats = parse_image_chats(df, "auto", source, base_dir=files, skipped=skipped)
        return check_images(chats, source, ImageOptions(), skipped=skipped)

    with pytest.raises(DataError) as info:
        run(None)
    message = str(info.value)
    assert "\n" not in message and "data.bad_records=skip" in message
    assert all(n in message for n in needles), message
    if stage == "check":  # it parses; only opening the image finds it
        parse_image_chats(df, "auto", source, base_dir=files)
    skipped: list = []
    kept = run(skipped)
    assert [c.record for c in kept] == [1, 3]
    assert len(skipped) == 1 and skipped[0][0] == 2 and "\n" not in skipped[0][1]
    assert all(n in skipped[0][1] for n in needles)


def test_check_images_names_records_by_numbers_and_refuses_a_decompression_bomb(tmp_path, monkeypatch):
    big, small = _img(tmp_path / "big.png", (60, 60)), _img(tmp_path / "small.png")
    chats = [ImageChat([], [str(small)]), ImageChat([], [str(big)])]
    assert check_images(chats, "s", ImageOptions()) == chats
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3600 pixels > twice the limit: DecompressionBombError
    with pytest.raises(
        DataError, match=rf"^s: record 9: cannot read image {re.escape(str(big))}: too large to open safely \("
    ) as e:
        check_images(chats, "s", ImageOptions(), numbers=[4, 9])
    assert "\n" not in str(e.value)
    skipped: list = []
    assert check_images(chats, "s", ImageOptions(), skipped, numbers=[4, 9]) == chats[:1]
    assert skipped[0][0] == 9
    with pytest.raises(ValueError):
        check_images(chats, "s", ImageOptions(), numbers=[1])


def test_load_image_resizes_keeping_aspect_ratio(tmp_path):
    path = _img(tmp_path / "wide.png", (300, 200))
    im = load_image(str(path), ImageOptions(max_pixels=6000))
    assert im.mode == "RGB" and im.width * im.height <= 6000 and im.width * im.height > 5500
    assert math.isclose(im.width / im.height, 1.5, rel_tol=0.03)
    im = load_image(str(path), ImageOptions(min_pixels=240_000))
    assert im.size == (600, 400)
    im = load_image(str(path), ImageOptions(min_pixels=100_000))
    assert im.width * im.height >= 100_000 and math.isclose(im.width / im.height, 1.5, rel_tol=0.01)
    assert load_image(str(path), ImageOptions(max_pixels=60_000, min_pixels=100)).size == (300, 200)
    assert load_image(str(path)).getpixel((0, 0)) == (200, 30, 40)
    thin = _img(tmp_path / "thin.png", (1, 500))
    with pytest.raises(DataError, match="cannot fit max_pixels=100 keeping its aspect ratio"):
        load_image(str(thin), ImageOptions(max_pixels=100))
    with pytest.raises(DataError, match="record 1: cannot read image .*thin.png: 1x500 cannot fit"):
        check_images([ImageChat([], [str(thin)], 1)], "s", ImageOptions(max_pixels=100))


def test_load_image_decodes_data_urls_and_converts_to_rgb():
    rgba = Image.new("RGBA", (8, 4), (10, 20, 30, 255))
    im = load_image(_data_url(rgba), ImageOptions(max_pixels=8))
    assert im.mode == "RGB" and im.size == (4, 2) and im.getpixel((0, 0)) == (10, 20, 30)
    gray = load_image(_data_url(Image.new("L", (3, 3), 77), "JPEG"), ImageOptions())
    assert gray.mode == "RGB" and gray.size == (3, 3)
    with pytest.raises(DataError, match=r"^cannot read image \(data URL\): its base64 data cannot be decoded"):
        load_image("data:image/png;base64,!!!", ImageOptions())
    with pytest.raises(DataError, match="remote URL"):
        load_image("https://example.com/a.png", ImageOptions())


def test_options_and_formats_are_checked(tmp_path):
    for bad in [{"max_pixels": 0}, {"min_pixels": -1}, {"max_pixels": 1.5}, {"min_pixels": 10, "max_pixels": 5}]:
        with pytest.raises(ConfigError):
            ImageOptions(**bad)
    with pytest.raises(ConfigError, match="placeholder"):
        ImageOptions(placeholder=" ")
    df = pd.DataFrame({"text": ["hello"]})
    with pytest.raises(DataError, match="cannot tell the image-chat format from the columns"):
        parse_image_chats(df, "auto", "s", base_dir=tmp_path)
    with pytest.raises(DataError, match="'text' is not an image-chat format"):
        parse_image_chats(df, "text", "s", base_dir=tmp_path)
    with pytest.raises(DataError, match="format 'alpaca' needs a column 'instruction'"):
        parse_image_chats(df, "alpaca", "s", base_dir=tmp_path)
    # a custom placeholder and roles
    rec = {
        "conversations": [{"from": "asker", "value": "[img] hi"}, {"from": "gpt", "value": "ok"}],
        "images": ["x.png"],
    }
    _, chats = parse_image_chats(
        pd.DataFrame([rec]), "sharegpt", "s", base_dir=tmp_path, roles={"asker": "user"}, placeholder="[img]"
    )
    assert chats[0].messages[0]["content"] == [{"type": "image", "index": 0}, {"type": "text", "text": " hi"}]
    assert chats[0].images == [str(tmp_path / "x.png")]
