"""Fuzzing `tuneforge validate` in-process: generated configs, overrides and YAML text near the real schema (typos,
wrong types, nested garbage, huge strings and numbers, unicode, broken YAML) must each end in exit 0 or exactly one
`error: ...` line under 300 characters that names the key (or the file and line), exit 2; never a traceback, never
the generic `<ExceptionType>:` fallback, never a hang."""

from __future__ import annotations

import os
import re
import signal
import typing
from contextlib import contextmanager

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tuneforge.cli import commands  # noqa: F401  (registers the subcommands; imports happen outside capture)
from tuneforge.cli.app import main
from tuneforge.config.schema import RunConfig
from tuneforge.methods import METHODS
from tuneforge.tasks import TASKS

HARD_TIMEOUT_S = 20  # one example that runs longer than this is a hang: the test fails
GENERIC = re.compile(r"^error: [A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b: ")
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=5000,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


# ---- what the schema offers: key paths and values that get deep into validation --------------------------------
def _model_of(ann):
    for cand in (ann, *typing.get_args(ann)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _walk(model: type[BaseModel], prefix: str, out: dict):
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None and name not in ("task", "method"):
            _walk(sub, f"{prefix}{name}.", out)
        else:
            out[f"{prefix}{name}"] = field.annotation


FIELDS: dict[str, typing.Any] = {}
_walk(RunConfig, "", FIELDS)
for _name in METHODS.names():
    _walk(METHODS.get(_name).Config, "method.", FIELDS)
for _name in TASKS.names():
    _walk(TASKS.get(_name).Config, "task.", FIELDS)
KEYS = sorted(FIELDS)
SECTIONS = sorted(RunConfig.model_fields)


def _good_values(ann) -> list:
    """A few values of the annotation's own kind (literals, small numbers), to reach the cross-field checks."""
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return list(typing.get_args(ann))
    if origin is not None:
        return [v for a in typing.get_args(ann) for v in _good_values(a)]
    return {
        int: [0, 1, 3, 8],
        float: [0.0, 0.1, 0.5, 2.0],
        bool: [True, False],
        str: ["x", "query", "all-linear"],
        type(None): [None],
    }.get(ann, [])


def typo(word: str) -> st.SearchStrategy[str]:
    @st.composite
    def one(draw):
        if not word:
            return draw(st.text(max_size=3))
        i = draw(st.integers(0, len(word) - 1))
        kind = draw(st.sampled_from(["drop", "double", "swap", "replace", "case"]))
        if kind == "drop":
            return word[:i] + word[i + 1 :]
        if kind == "double":
            return word[:i] + word[i] + word[i:]
        if kind == "swap" and i + 1 < len(word):
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if kind == "case":
            return word.upper()
        return word[:i] + draw(st.characters(codec="utf-8")) + word[i + 1 :]

    return one()


HUGE_TEXT = st.sampled_from([10, 300, 5_000, 20_000]).map(lambda n: "x" * n)
NUMBERS = st.one_of(
    st.integers(-10, 10),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**32, 2**32 - 1, -1, 10**30, 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e30, -1e30, 1e-300, 0.5, 3e-5]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=20),
    HUGE_TEXT,
    st.sampled_from(
        [
            "auto",
            "none",
            "steps",
            "epoch",
            "no",
            "true",
            "([",
            "*",
            "all-linear",
            "../../x",
            "a/b",
            "",
            " ",
            "\x00",
            "é漢字🙂",
            "1e30",
            "-1",
        ]
    ),
)
GARBAGE = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.booleans()), inner, max_size=4),
    ),
    max_leaves=12,
)


def deep(levels: int):
    value: typing.Any = 1
    for _ in range(levels):
        value = [value]
    return value


@st.composite
def key_path(draw) -> str:
    kind = draw(st.sampled_from(["real", "real", "real", "typo", "section", "random", "deep"]))
    if kind == "real":
        return draw(st.sampled_from(KEYS))
    if kind == "typo":
        parts = draw(st.sampled_from(KEYS)).split(".")
        j = draw(st.integers(0, len(parts) - 1))
        parts[j] = draw(typo(parts[j]))
        return ".".join(parts)
    if kind == "section":
        return draw(st.sampled_from(SECTIONS)) + "." + draw(st.text(min_size=1, max_size=12))
    if kind == "deep":
        return ".".join([draw(st.sampled_from(SECTIONS))] + ["k"] * draw(st.integers(1, 80)))
    return draw(st.one_of(st.text(min_size=1, max_size=30), HUGE_TEXT))


@st.composite
def value_for(draw, key: str):
    ann = FIELDS.get(key)
    good = _good_values(ann) if ann is not None else []
    choices = ["garbage", "scalar", "deep"] + (["good"] * 3 if good else [])
    kind = draw(st.sampled_from(choices))
    if kind == "good":
        return draw(st.sampled_from(good))
    if kind == "deep":
        return deep(draw(st.sampled_from([10, 70, 500, 5_000])))
    return draw(SCALARS if kind == "scalar" else GARBAGE)


def _set(raw: dict, key: str, value) -> None:
    parts = [p for p in key.split(".") if p] or [key]
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = node[p] = {}
        node = child
    node[parts[-1]] = value


@st.composite
def raw_config(draw) -> dict:
    raw: dict = {}
    for _ in range(draw(st.integers(0, 6))):
        key = draw(key_path())
        _set(raw, key, draw(value_for(key)))
    if draw(st.integers(0, 9)) == 0:  # a whole section replaced by garbage
        raw[draw(st.sampled_from(SECTIONS))] = draw(GARBAGE)
    return raw


def override_text(value) -> str:
    depth = 0
    while isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value, depth = value[0], depth + 1
    if depth > 20:  # too deep for PyYAML's emitter: write the nesting out
        return "[" * depth + override_text(value) + "]" * depth
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()
    except (yaml.YAMLError, RecursionError, ValueError):
        return str(value)


@st.composite
def override(draw) -> str:
    key = draw(key_path())
    kind = draw(st.sampled_from(["value", "value", "text", "no_equals", "empty_key", "option"]))
    if kind == "option":  # what click sees as an option (`--debug` aside, which switches tracebacks on)
        return draw(
            st.sampled_from(
                ["--resume=1", "--resume", "--force", "-x", "--", "-", "--help", "-h", "--out=x", "--" + "x" * 500]
            )
        )
    if kind == "no_equals":
        return key
    if kind == "empty_key":
        return "=" + draw(st.text(max_size=10))
    text = draw(
        st.one_of(
            st.text(max_size=30),
            HUGE_TEXT,
            st.sampled_from(["[" * 5000, "{a: " * 100, "9" * 5000, "1e30", "true", "null", "[query, value]", "(["]),
        )
    )
    return f"{key}={override_text(draw(value_for(key))) if kind == 'value' else text}"


YAML_PIECES = [
    "train:",
    "  epochs: 1",
    "method: {name: lora",
    "]",
    "- a",
    "\t",
    ": :",
    "&a [*a]",
    "*b",
    "!!python/object:os.system",
    "key: 'unterminated",
    '"\\x"',
    "? complex",
    "%YAML 1.1",
    "---",
    "...",
    "{",
    "[[",
    "model:\n  name: x",
    "data:\n  split: {validation: .5, test: .45}",
    "é: 漢字",
    "9" * 5000,
    "[" * 3000,
    "@",
    "`",
    "|\n  x",
    "!!binary AAAA",
    "!!float abc",
    "!!int 0x",
    "0o777",
    "1:2:3",
    "2024-01-01",
    "~: 1",
    "? [1]\n: 2",
]


@st.composite
def yaml_text(draw) -> str:
    pieces = draw(st.lists(st.one_of(st.sampled_from(YAML_PIECES), st.text(max_size=20)), min_size=1, max_size=8))
    return "\n".join(pieces) + draw(st.sampled_from(["", "\n"]))


# ---- the property ------------------------------------------------------------------------------------------------
@contextmanager
def hard_timeout(seconds: int):
    def fail(*_):
        raise TimeoutError(f"one validate call ran longer than {seconds}s (a hang)")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _lead(text) -> str:
    return " ".join(str(text).split())[:15]


def check_validate(capsys, path, overrides=(), leads=()):
    """Run `tuneforge validate path overrides...` in-process and check what it printed."""
    os.environ.pop("TUNEFORGE_DEBUG", None)  # a generated `--debug` must not leak into the next example
    capsys.readouterr()
    with hard_timeout(HARD_TIMEOUT_S):
        code = main(["validate", str(path), *overrides])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert code in (0, 2), (code, err[-500:])
    if code == 0:
        assert err.strip() == "" or not err.strip().startswith("error"), err[-500:]
        assert out.strip(), "validate printed no config"
        return code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-1000:]
    line = lines[0]
    assert line.startswith("error: ") and len(line) < 300, line
    assert not GENERIC.match(line), line
    body = line.removeprefix("error: ").removeprefix("invalid config: ")
    leads = [_lead(x) for x in leads if _lead(x)]
    # the key (a section, a written key, an override or option as typed) or the file comes first
    assert (
        body.startswith(tuple(SECTIONS + leads + ["override"]))
        or str(path) in line
        or (
            body.startswith(("No such option", "Got unexpected extra argument", "Option "))
            and any(lead in body for lead in leads)
        )
    ), line
    return code


@pytest.fixture
def cfg_path(tmp_path):
    return tmp_path / "cfg.yaml"


@pytest.mark.integration
@settings(FUZZ, max_examples=450)
@given(raw=raw_config())
def test_fuzz_config_files(capsys, cfg_path, raw):
    try:
        text = yaml.safe_dump(raw, allow_unicode=True)
    except (yaml.YAMLError, RecursionError):
        text = "train: " + "[" * 200  # too deep for PyYAML's own emitter: a file that is too deep instead
    cfg_path.write_text(text, encoding="utf-8")
    check_validate(capsys, cfg_path, leads=list(raw))


@pytest.mark.integration
@settings(FUZZ, max_examples=400)
@given(overrides=st.lists(override(), min_size=1, max_size=4), raw=st.one_of(st.just({}), raw_config()))
def test_fuzz_overrides(capsys, cfg_path, overrides, raw):
    try:
        cfg_path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    except (yaml.YAMLError, RecursionError):
        cfg_path.write_text("{}\n", encoding="utf-8")
        raw = {}
    leads = list(raw) + [o.split("=", 1)[0].strip().split(".")[0] for o in overrides]
    check_validate(capsys, cfg_path, overrides, leads=leads)


@pytest.mark.integration
@settings(FUZZ, max_examples=250)
@given(text=yaml_text())
def test_fuzz_yaml_text(capsys, cfg_path, text):
    cfg_path.write_text(text, encoding="utf-8")
    try:
        leads = list(yaml.safe_load(text) or {})
    except Exception:
        leads = []
    check_validate(capsys, cfg_path, leads=leads if isinstance(leads, list) else [])


@pytest.mark.unit
def test_fuzz_known_cases(capsys, cfg_path):
    """The cases found by hand that once reached the generic fallback, a traceback or a hang."""
    cfg_path.write_text("method: {name: lora}\n", encoding="utf-8")
    cases = [
        ["train.seed=-1"],
        ["train.seed=99999999999999"],
        ["method.target_modules=(["],
        ["method.name=ia3", "method.target_modules=[query]", "method.feedforward_modules=[value]"],
        ["train.eval_strategy=steps", "train.eval_steps=3", "train.save_steps=5"],
        ["train.eval_batch_size=1e30"],
        ["train.batch_size=true"],
        ["output.name=../../x"],
        ["train.epochs=" + "9" * 5000],
        ["train.epochs=" + "[" * 5000],
        ["model.name=" + "x" * 100_000],
        ["x" * 100_000 + "=1"],
    ]
    for overrides in cases:
        check_validate(capsys, cfg_path, overrides, leads=[o.split("=")[0].split(".")[0] for o in overrides])
    capsys.readouterr()
    assert main(["validate", str(cfg_path), "--resume=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: No such option: --resume") and "\n" not in err and not GENERIC.match(err)
