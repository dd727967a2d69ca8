"""Preference data (DPO-family pairs, KTO labelled answers): every accepted form parsed to the normalised shape
through the real reader, a matrix of malformed records (each one DataError naming the record and the problem, or
listed and left out with data.bad_records=skip), and the builtin LLaMA-Factory demo sets."""

import importlib.util
import io
import json
import os
import re
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from tuneforge.data.columns import skip_hint
from tuneforge.data.preference_builtins import PREFERENCE_BUILTINS, preference_data_dir, read_preference_builtin
from tuneforge.data.preference_formats import parse_preference_records
from tuneforge.data.sources import read_table
from tuneforge.errors import DataError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, rows: list, name: str = "prefs.jsonl") -> str:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif name.endswith(".json"):
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        pd.DataFrame(rows).to_parquet(path)
    return str(path)


def parse(tmp_path: Path, rows: list, fmt: str = "auto", name: str = "prefs.jsonl", **kw):
    source = write(tmp_path, rows, name)
    return parse_preference_records(read_table(source), fmt, source, **kw)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------------------------------------------------- forms


def test_alpaca_pairs_with_input_system_and_history(tmp_path):
    kind, fmt, recs = parse(
        tmp_path,
        [
            {
                "instruction": "Translate",
                "input": "bonjour",
                "system": "be brief",
                "history": [["hi", "hello!"]],
                "chosen": "hello",
                "rejected": "goodbye",
            },
            {"instruction": "Add 2 and 3", "input": "", "chosen": "5", "rejected": "6"},
        ],
        name="prefs.json",
    )
    assert (kind, fmt) == ("paired", "alpaca")
    assert recs[0] == {
        "prompt": [
            {"role": "system", "content": "be brief"},
            user("hi"),
            assistant("hello!"),
            user("Translate\nbonjour"),  # LLaMA-Factory joins instruction and input with a newline
        ],
        "chosen": "hello",
        "rejected": "goodbye",
    }
    assert recs[1] == {"prompt": [user("Add 2 and 3")], "chosen": "5", "rejected": "6"}


def test_alpaca_kto_labelled_outputs(tmp_path):
    kind, fmt, recs = parse(
        tmp_path,
        [
            {"instruction": "Greet", "output": "Hello!", "kto_tag": True},
            {"instruction": "Greet", "input": "rudely", "output": "Go away.", "kto_tag": False},
        ],
    )
    assert (kind, fmt) == ("unpaired", "alpaca")
    assert recs == [
        {"prompt": [user("Greet")], "completion": "Hello!", "label": True},
        {"prompt": [user("Greet\nrudely")], "completion": "Go away.", "label": False},
    ]


def test_sharegpt_pairs_llamafactory_form(tmp_path):
    # the form of LLaMA-Factory's dpo_en_demo.json: conversations of {from, value}, chosen/rejected one message each
    kind, fmt, recs = parse(
        tmp_path,
        [
            {
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello, how can I help?"},
                    {"from": "human", "value": "Name a colour"},
                ],
                "chosen": {"from": "gpt", "value": "Blue"},
                "rejected": {"from": "gpt", "value": "I cannot"},
                "system": "You are terse.",
            },
            {
                "conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "2+2?"}],
                "chosen": {"from": "gpt", "value": "4"},
                "rejected": {"from": "gpt", "value": "5"},
            },
        ],
        name="prefs.json",
    )
    assert (kind, fmt) == ("paired", "sharegpt")
    assert recs[0] == {
        "prompt": [
            {"role": "system", "content": "You are terse."},
            user("Hi"),
            assistant("Hello, how can I help?"),
            user("Name a colour"),
        ],
        "chosen": "Blue",
        "rejected": "I cannot",
    }
    assert recs[1]["prompt"] == [{"role": "system", "content": "sys"}, user("2+2?")]
    assert (recs[1]["chosen"], recs[1]["rejected"]) == ("4", "5")


def test_sharegpt_pairs_role_content_turns_and_text_answers(tmp_path):
    kind, fmt, recs = parse(
        tmp_path, [{"messages": [user("Capital of France?")], "chosen": "Paris", "rejected": "Lyon"}], fmt="sharegpt"
    )
    assert (kind, fmt) == ("paired", "sharegpt")
    assert recs == [{"prompt": [user("Capital of France?")], "chosen": "Paris", "rejected": "Lyon"}]


def test_trl_standard_pairs(tmp_path):
    kind, fmt, recs = parse(tmp_path, [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}])
    assert (kind, fmt) == ("paired", "trl")
    assert recs == [{"prompt": [user("The sky is")], "chosen": " blue.", "rejected": " green."}]


def test_trl_conversational_pairs(tmp_path):
    kind, fmt, recs = parse(
        tmp_path,
        [
            {
                "prompt": [{"role": "system", "content": "Be kind."}, user("What colour is the sky?")],
                "chosen": [assistant("It is blue.")],
                "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "It is green."}]}],
            }
        ],
    )
    assert (kind, fmt) == ("paired", "trl")
    assert recs == [
        {
            "prompt": [{"role": "system", "content": "Be kind."}, user("What colour is the sky?")],
            "chosen": "It is blue.",
            "rejected": "It is green.",
        }
    ]


def test_trl_implicit_prompt(tmp_path):
    shared = [user("Hi"), assistant("Hello!"), user("What colour is the sky?")]
    kind, fmt, recs = parse(
        tmp_path, [{"chosen": [*shared, assistant("Blue.")], "rejected": [*shared, assistant("Green.")]}]
    )
    assert (kind, fmt) == ("paired", "trl")
    assert recs == [{"prompt": shared, "chosen": "Blue.", "rejected": "Green."}]


def test_trl_unpaired_labels_of_every_accepted_spelling(tmp_path):
    labels = [True, False, "true", "FALSE", 1, 0, " True "]
    rows = [{"prompt": f"q{i}", "completion": f"a{i}", "label": v} for i, v in enumerate(labels)]
    kind, fmt, recs = parse(tmp_path, rows)
    assert (kind, fmt) == ("unpaired", "trl")
    assert [r["label"] for r in recs] == [True, False, True, False, True, False, True]
    assert all(type(r["label"]) is bool for r in recs)
    assert recs[0] == {"prompt": [user("q0")], "completion": "a0", "label": True}


def test_trl_unpaired_conversational(tmp_path):
    kind, _, recs = parse(
        tmp_path, [{"prompt": [user("Hi")], "completion": [assistant("Hey")], "label": False}], fmt="kto"
    )
    assert kind == "unpaired"
    assert recs == [{"prompt": [user("Hi")], "completion": "Hey", "label": False}]


def test_llamafactory_kto_form(tmp_path):
    # the form of LLaMA-Factory's kto_en_demo.json: messages of {role, content}, the last the judged answer
    kind, fmt, recs = parse(
        tmp_path,
        [
            {"messages": [user("Hi"), assistant("Hello"), user("Joke?"), assistant("No.")], "label": False},
            {"messages": [user("Sum 1 and 1"), assistant("2")], "label": True},
        ],
        name="prefs.json",
    )
    assert (kind, fmt) == ("unpaired", "kto")
    assert recs[0] == {"prompt": [user("Hi"), assistant("Hello"), user("Joke?")], "completion": "No.", "label": False}
    assert recs[1] == {"prompt": [user("Sum 1 and 1")], "completion": "2", "label": True}


def test_llamafactory_kto_readme_form_with_conversations_and_kto_tag(tmp_path):
    kind, fmt, recs = parse(
        tmp_path,
        [
            {
                "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
                "kto_tag": "true",
                "system": "Be nice.",
            }
        ],
    )
    assert (kind, fmt) == ("unpaired", "kto")
    assert recs == [
        {"prompt": [{"role": "system", "content": "Be nice."}, user("Hi")], "completion": "Hello", "label": True}
    ]


def test_parquet_arrays_and_structs(tmp_path):
    # parquet gives numpy arrays for lists and dicts for structs
    rows = [
        {"conversations": [{"from": "human", "value": "Hi"}], "chosen": {"from": "gpt", "value": "Hello"}},
        {"conversations": [{"from": "human", "value": "Yo"}], "chosen": {"from": "gpt", "value": "Hey"}},
    ]
    for r, rej in zip(rows, ("Go away", "Leave")):
        r["rejected"] = {"from": "gpt", "value": rej}
    kind, fmt, recs = parse(tmp_path, rows, name="prefs.parquet")
    assert (kind, fmt, len(recs)) == ("paired", "sharegpt", 2)
    assert recs[1] == {"prompt": [user("Yo")], "chosen": "Hey", "rejected": "Leave"}


def test_int_labels_with_a_missing_one(tmp_path):
    # pandas turns an int column with a gap into floats (1.0/0.0): still labels; the gap is a bad record
    rows = [{"prompt": "a", "completion": "b", "label": 1}, {"prompt": "c", "completion": "d"}]
    rows.append({"prompt": "e", "completion": "f", "label": 0})
    skipped: list = []
    kind, _, recs = parse(tmp_path, rows, skipped=skipped)
    assert kind == "unpaired"
    assert [r["label"] for r in recs] == [True, False]
    assert skipped and skipped[0][0] == 2 and "no label" in skipped[0][1]


def test_roles_mapping_and_numbers(tmp_path):
    numbers: list = []
    kind, _, recs = parse(
        tmp_path,
        [
            {
                "conversations": [{"from": "narrator", "value": "2+2?"}],
                "chosen": {"from": "gpt", "value": 4},
                "rejected": "5",
            }
        ],
        roles={"narrator": "user"},
        numbers=numbers,
    )
    assert recs == [{"prompt": [user("2+2?")], "chosen": "4", "rejected": "5"}]
    assert numbers and "chosen" in numbers[0]


def test_mixed_paired_and_unpaired_file_is_an_error_even_when_skipping(tmp_path):
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "c", "rejected": "d"},
        {"prompt": "q", "completion": "e", "label": True},
    ]
    for skipped in (None, []):
        with pytest.raises(DataError, match=r"mixes paired records .*record 1.* unpaired .*record 3"):
            parse(tmp_path, rows, skipped=skipped)


@pytest.mark.parametrize(
    "fmt,rows,match",
    [
        ("auto", [{"question": "q", "answer": "a"}], "cannot tell the preference data format"),
        ("alpaca", [{"prompt": "q", "chosen": "a", "rejected": "b"}], "format 'alpaca' needs an 'instruction'"),
        ("kto", [{"prompt": "q", "chosen": "a", "rejected": "b"}], "format 'kto' needs a 'kto_tag' or 'label'"),
        ("dpo", [{"prompt": "q", "chosen": "a", "rejected": "b"}], "unknown preference data format 'dpo'"),
    ],
)
def test_file_level_errors(tmp_path, fmt, rows, match):
    with pytest.raises(DataError, match=match):
        parse(tmp_path, rows, fmt=fmt, skipped=[])


# ------------------------------------------------------------------------------------------------ bad records

ALPACA = {"instruction": "Say hi", "chosen": "Hi!", "rejected": "No."}
SHAREGPT = {
    "conversations": [{"from": "human", "value": "Say hi"}],
    "chosen": {"from": "gpt", "value": "Hi!"},
    "rejected": {"from": "gpt", "value": "No."},
}
TRL = {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}
TRL_CONV = {"prompt": [user("Say hi")], "chosen": [assistant("Hi!")], "rejected": [assistant("No.")]}
IMPLICIT = {"chosen": [user("Say hi"), assistant("Hi!")], "rejected": [user("Say hi"), assistant("No.")]}
KTO = {"messages": [user("Say hi"), assistant("Hi!")], "label": True}
TRL_KTO = {"prompt": "Say hi", "completion": "Hi!", "label": False}

BAD = [
    ("alpaca-no-rejected", ALPACA, {"instruction": "q", "chosen": "a"}, "no rejected answer"),
    ("alpaca-null-rejected", ALPACA, {**ALPACA, "rejected": None}, "no rejected answer"),
    ("alpaca-identical", ALPACA, {**ALPACA, "rejected": "Hi!"}, "chosen and rejected answers are identical"),
    ("alpaca-identical-but-spaces", ALPACA, {**ALPACA, "rejected": " Hi!\n"}, "answers are identical"),
    ("alpaca-empty-chosen", ALPACA, {**ALPACA, "chosen": ""}, r"the chosen answer \(field 'chosen'\) is empty"),
    ("alpaca-blank-rejected", ALPACA, {**ALPACA, "rejected": "  "}, r"rejected answer \(field 'rejected'\) is empty"),
    ("alpaca-empty-prompt", ALPACA, {**ALPACA, "instruction": "", "input": " "}, "the prompt is empty"),
    ("alpaca-bad-history", ALPACA, {**ALPACA, "history": [["only a question"]]}, r"'history'\[0\] must be an"),
    ("sharegpt-empty-prompt", SHAREGPT, {**SHAREGPT, "conversations": []}, "the prompt is empty"),
    (
        "sharegpt-prompt-ends-with-assistant",
        SHAREGPT,
        {**SHAREGPT, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        r"last turn \(turn 2\) is the assistant's; it must be the user's",
    ),
    (
        "sharegpt-unknown-role",
        SHAREGPT,
        {**SHAREGPT, "conversations": [{"from": "robot", "value": "q"}]},
        "unknown role 'robot'",
    ),
    (
        "sharegpt-chosen-from-human",
        SHAREGPT,
        {**SHAREGPT, "chosen": {"from": "human", "value": "Hi!"}},
        "chosen answer .* must be the assistant's message, not the user's",
    ),
    (
        "sharegpt-rejected-unknown-role",
        SHAREGPT,
        {**SHAREGPT, "rejected": {"from": "critic", "value": "No."}},
        "rejected answer .*unknown role 'critic'",
    ),
    (
        "sharegpt-system-not-first",
        SHAREGPT,
        {**SHAREGPT, "conversations": [{"from": "human", "value": "q"}, {"from": "system", "value": "s"}]},
        r"system message is allowed only first in the prompt \(turn 2\)",
    ),
    ("sharegpt-no-chosen", SHAREGPT, {**SHAREGPT, "chosen": None}, "no chosen answer"),
    ("trl-empty-prompt", TRL, {**TRL, "prompt": ""}, "the prompt is empty"),
    ("trl-missing-chosen", TRL, {"prompt": "q", "rejected": "b"}, "no chosen answer"),
    ("trl-empty-rejected", TRL, {**TRL, "rejected": ""}, "rejected answer .* is empty"),
    ("trl-chosen-not-text", TRL, {**TRL, "chosen": [1, 2]}, "chosen answer .* must be text"),
    (
        "trl-conv-two-message-chosen",
        TRL_CONV,
        {**TRL_CONV, "chosen": [assistant("a"), assistant("b")]},
        "must be one assistant message, got 2",
    ),
    (
        "trl-conv-prompt-ends-with-assistant",
        TRL_CONV,
        {**TRL_CONV, "prompt": [user("q"), assistant("a")]},
        "is the assistant's; it must be the user's",
    ),
    (
        "trl-implicit-differs-early",
        IMPLICIT,
        {"chosen": [user("q1"), assistant("a")], "rejected": [user("q2"), assistant("b")]},
        "differs from the other answer at turn 1",
    ),
    (
        "trl-implicit-two-turn-tail",
        IMPLICIT,
        {"chosen": [user("q"), assistant("a"), user("more")], "rejected": [user("q"), assistant("b")]},
        "differs from the other answer at turn 2",
    ),
    ("trl-implicit-texts", IMPLICIT, {"chosen": "a", "rejected": "b"}, "TRL's implicit prompt"),
    ("trl-implicit-identical", IMPLICIT, {"chosen": IMPLICIT["chosen"], "rejected": IMPLICIT["chosen"]}, "identical"),
    ("kto-label-yes", KTO, {**KTO, "label": "yes"}, r"label \(field 'label'\) must be a boolean .*'yes'"),
    ("kto-label-two", KTO, {**KTO, "label": 2}, "must be a boolean"),
    ("kto-label-half", KTO, {**KTO, "label": 0.5}, "must be a boolean"),
    ("kto-label-list", KTO, {**KTO, "label": [True]}, "must be a boolean"),
    ("kto-no-label", KTO, {"messages": KTO["messages"]}, r"no label \(field 'label' is missing\)"),
    (
        "kto-last-turn-user",
        KTO,
        {**KTO, "messages": [user("q"), assistant("a"), user("again")]},
        "must be the assistant's answer that the label judges",
    ),
    ("kto-no-prompt", KTO, {**KTO, "messages": [assistant("a")]}, "the prompt is empty"),
    (
        "kto-unknown-role",
        KTO,
        {**KTO, "messages": [{"role": "critic", "content": "q"}, assistant("a")]},
        "unknown role",
    ),
    ("trl-kto-empty-completion", TRL_KTO, {**TRL_KTO, "completion": ""}, r"completion \(field 'completion'\) is empty"),
    ("trl-kto-no-completion", TRL_KTO, {"prompt": "q", "label": True}, "no completion"),
    ("trl-kto-label-word", TRL_KTO, {**TRL_KTO, "label": "maybe"}, "must be a boolean"),
    ("pair-with-a-label", TRL, {**TRL, "label": True}, "has both chosen/rejected answers and a KTO label"),
]


@pytest.mark.parametrize("good,bad,problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_record(tmp_path, good, bad, problem):
    rows = [good, bad, good]
    with pytest.raises(DataError) as err:
        parse(tmp_path, rows)
    msg = str(err.value)
    assert "prefs.jsonl: record 2: " in msg
    assert re.search(problem, msg), msg
    assert msg.endswith(skip_hint())
    skipped: list = []
    _, _, recs = parse(tmp_path, rows, skipped=skipped)
    assert len(recs) == 2
    assert [n for n, _ in skipped] == [2]
    assert "record 2: " in skipped[0][1] and skip_hint() not in skipped[0][1]


def test_bad_matrix_is_wide():
    assert len(BAD) >= 15


def test_skip_every_record_gives_no_records(tmp_path):
    skipped: list = []
    kind, _, recs = parse(tmp_path, [{**TRL, "chosen": ""}, {**TRL, "rejected": "Hi!"}], skipped=skipped)
    assert (kind, recs, [n for n, _ in skipped]) == ("paired", [], [1, 2])


# ------------------------------------------------------------------------------------------------- builtins


@pytest.mark.parametrize(
    "name,kind", [("dpo-en-demo", "paired"), ("dpo-zh-demo", "paired"), ("kto-en-demo", "unpaired")]
)
def test_builtin_preference_sets_parse_cleanly(name, kind):
    path = preference_data_dir() / PREFERENCE_BUILTINS[name][0]
    if not path.is_file() and not os.environ.get("TUNEFORGE_REQUIRE_PREFERENCE_DATA"):
        pytest.skip(f"{path} is not extracted (make install); set TUNEFORGE_REQUIRE_PREFERENCE_DATA to fail instead")
    frame = read_preference_builtin(name)
    skipped: list = []
    got_kind, fmt, recs = parse_preference_records(frame, "auto", f"builtin:{name}", skipped=skipped)
    assert skipped == []
    assert got_kind == kind
    assert fmt == ("sharegpt" if kind == "paired" else "kto")
    assert len(recs) > 250
    if kind == "unpaired":
        labels = [r["label"] for r in recs]
        assert 0 < sum(labels) < len(labels)  # both desirable and undesirable answers


@pytest.mark.parametrize("name, chinese", [("alpaca-zh-demo", True), ("alpaca-en-demo", False)])
def test_builtin_alpaca_sets_read_as_sft_conversations(name, chinese):
    """LLaMA-Factory's Alpaca demo sets (issue 37): instruction data the SFT reader takes as alpaca records."""
    from tuneforge.data.builtin_sets import BUILTIN_DATA
    from tuneforge.data.sft_formats import parse_records

    path = preference_data_dir() / PREFERENCE_BUILTINS[name][0]
    if not path.is_file() and not os.environ.get("TUNEFORGE_REQUIRE_PREFERENCE_DATA"):
        pytest.skip(f"{path} is not extracted (make install); set TUNEFORGE_REQUIRE_PREFERENCE_DATA to fail instead")
    frame = BUILTIN_DATA[name][0]()
    skipped: list = []
    fmt, convs = parse_records(frame, "auto", f"builtin:{name}", skipped=skipped)
    assert fmt == "alpaca" and skipped == [] and len(convs) >= 999
    assert [m["role"] for m in convs[0]] == ["user", "assistant"]
    han = sum(any("\u4e00" <= ch <= "\u9fff" for ch in c[-1]["content"]) for c in convs)
    assert (han > 950) if chinese else (han < 50)


def test_builtin_missing_file_says_make_install(tmp_path):
    with pytest.raises(DataError, match=r"builtin:dpo-en-demo' is not installed .*run `make install`"):
        read_preference_builtin("dpo-en-demo", tmp_path)
    with pytest.raises(DataError, match="unknown builtin preference data 'builtin:dpo'; available: builtin:dpo-en"):
        read_preference_builtin("dpo")


def _fetch_script():
    spec = importlib.util.spec_from_file_location(
        "fetch_preference_data", ROOT / "requirements/fetch_preference_data.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fetch_script_checks_the_sdist(tmp_path, capsys):
    fetch = _fetch_script()
    sdist = tmp_path / "llamafactory-0.9.5.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        data = b"[]"
        info = tarfile.TarInfo("llamafactory-0.9.5/data/dpo_en_demo.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert fetch.main(["--sdist", str(sdist), "--dest", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fetch_preference_data: error: ") and "\n" not in err
    assert "SHA-256 differs" in err or "has no llamafactory-0.9.5/data/" in err
    assert not (tmp_path / "out" / "dpo_en_demo.json").exists()
    assert fetch.main(["--sdist", str(tmp_path / "nope.tar.gz"), "--dest", str(tmp_path / "out")]) == 1
    assert "no such file" in capsys.readouterr().err
