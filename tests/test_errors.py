"""One-line error messages: `errors.first_line` and the handlers that use it (issue 33, bug 1: an exception with an
empty message made twelve handlers raise IndexError inside themselves)."""

import importlib.util
import re
from pathlib import Path

import pytest
from torch import nn

from tuneforge.errors import ModelError, first_line

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[1] / "src" / "tuneforge"


def test_first_line_of_empty_multiline_and_long_messages():
    assert first_line(AssertionError()) == "AssertionError"
    assert first_line(ValueError("   \n  ")) == "ValueError"
    assert first_line(ValueError("\n\n  second line is the first  \nthird")) == "second line is the first"
    assert first_line(ValueError("x" * 500)) == "x" * 200
    assert first_line(ValueError("x" * 500), 10) == "x" * 10
    assert first_line(OSError("one\ntwo  three\n"), whole=True) == "one two three"
    assert first_line(KeyError(), with_type=True) == "KeyError"
    assert first_line(RuntimeError("boom\nmore"), with_type=True) == "RuntimeError: boom"


def test_no_handler_indexes_the_lines_of_a_message_by_hand():
    """Every one-line error goes through first_line: `str(exc).splitlines()[0]` fails on an empty message."""
    pattern = re.compile(r"str\(\w+\)(\.strip\(\))?\.splitlines\(\)(\[0\]| or )")
    found = [
        f"{p.relative_to(SRC)}:{i}"
        for p in SRC.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


def test_liger_failing_with_a_bare_assert_turns_liger_off(monkeypatch):
    """liger on (auto) whose patching fails with `AssertionError()` turns liger off and says so; it does not crash
    the run with an IndexError from the handler."""
    from tuneforge.config.schema import TrainSection
    from tuneforge.training import speed

    def bare_assert(model):
        raise AssertionError()

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(speed, "cuda_available", lambda: True)
    monkeypatch.setattr(
        speed.importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "liger_kernel" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(speed, "_apply_liger", bare_assert)
    levers = speed.apply_speedups(nn.Linear(2, 2), TrainSection(liger="auto", chunked_loss=False, compile=False))
    liger = next(lv for lv in levers if lv.key == "liger")
    assert not liger.on and liger.note == "off: AssertionError"
    with pytest.raises(Exception, match="train.liger: AssertionError"):
        speed.apply_speedups(nn.Linear(2, 2), TrainSection(liger=True, chunked_loss=False, compile=False))


def test_a_tokenizer_failing_without_a_message_is_one_model_error(monkeypatch):
    import transformers

    from tuneforge.models.loader import load_tokenizer

    def fail(*a, **k):
        raise OSError()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fail)
    with pytest.raises(ModelError, match=r"could not load a tokenizer from 'somewhere': OSError$"):
        load_tokenizer("somewhere")
