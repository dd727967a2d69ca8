"""Every SFT record format parsed into conversations; malformed records rejected with their number and field."""

import pandas as pd
import pytest

from tuneforge.data.sft_formats import parse_records
from tuneforge.errors import DataError

pytestmark = pytest.mark.unit


def parse(rows, fmt="auto", **kw):
    return parse_records(pd.DataFrame(rows), fmt, "data.jsonl", **kw)


def test_alpaca_with_input_system_and_history():
    fmt, recs = parse(
        [
            {
                "instruction": "Translate",
                "input": "bonjour",
                "output": "hello",
                "system": "be brief",
                "history": [["hi", "hello!"]],
            },
            {"instruction": "Add 2 and 3", "input": "", "output": "5"},
        ]
    )
    assert fmt == "alpaca"
    assert recs[0] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "Translate\nbonjour"},
        {"role": "assistant", "content": "hello"},
    ]
    assert recs[1] == [{"role": "user", "content": "Add 2 and 3"}, {"role": "assistant", "content": "5"}]


def test_sharegpt_with_known_and_configured_roles():
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {
            "conversations": [{"from": "customer", "value": "help"}, {"from": "agent", "value": "sure"}],
            "system": "you are support",
        },
    ]
    fmt, recs = parse(rows, roles={"customer": "user", "agent": "assistant"})
    assert fmt == "sharegpt"
    assert recs[0] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert recs[1][0] == {"role": "system", "content": "you are support"} and recs[1][2]["role"] == "assistant"


def test_messages_multi_turn_with_system_and_content_parts():
    rows = [
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "2"}]},
                {"role": "assistant", "content": "a2"},
            ]
        }
    ]
    fmt, recs = parse(rows)
    assert fmt == "messages" and [m["role"] for m in recs[0]] == ["system", "user", "assistant", "user", "assistant"]
    assert recs[0][3]["content"] == "q2"


def test_text_format_and_custom_column():
    fmt, recs = parse([{"body": "some text"}, {"body": "more"}], text_column="body")
    assert fmt == "text" and recs == ["some text", "more"]


def test_explicit_format_and_conversation_column():
    fmt, recs = parse(
        [{"chat": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
        fmt="messages",
        conversation_column="chat",
    )
    assert fmt == "messages" and len(recs[0]) == 2


@pytest.mark.parametrize(
    "rows, fmt, match",
    [
        (
            [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": None}],
            "alpaca",
            r"data.jsonl: record 2: field 'output' is missing",
        ),
        (
            [{"instruction": "a", "output": "b"}, {"instruction": "  ", "output": "x"}],
            "alpaca",
            r"record 2: field 'instruction' is empty",
        ),
        (
            [{"instruction": "a", "output": "b", "history": [["only one"]]}],
            "alpaca",
            r"record 1: field 'history'\[0\] must be an \[instruction, response\] pair",
        ),
        (
            [{"conversations": [{"from": "human", "value": "q"}, {"from": "narrator", "value": "x"}]}],
            "auto",
            r"record 1: field 'conversations'\[1\].from: unknown role 'narrator'; map it with data.roles",
        ),
        (
            [{"conversations": [{"from": "human", "value": "q"}, {"value": "x"}]}],
            "sharegpt",
            r"record 1: field 'conversations'\[1\] has no 'from'",
        ),
        (
            [
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                {"messages": [{"role": "user", "content": "only a question"}]},
            ],
            "auto",
            r"record 2: no assistant turn to learn from",
        ),
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "system", "content": "s"},
                        {"role": "assistant", "content": "a"},
                    ]
                }
            ],
            "messages",
            r"record 1: a system message is allowed only first",
        ),
        (
            [{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}],
            "messages",
            r"record 1: the first assistant turn \(turn 1\) has no user turn before it",
        ),
        ([{"messages": "not a list"}], "messages", r"record 1: field 'messages' must be a non-empty list"),
        (
            [{"messages": [{"role": "user", "content": {"x": 1}}, {"role": "assistant", "content": "a"}]}],
            "messages",
            r"record 1: field 'messages'\[0\].content must be text",
        ),
        ([{"question": "q", "answer": "a"}], "auto", r"cannot tell the data format from the columns"),
        ([{"text": "x"}], "alpaca", r"format 'alpaca' needs a column 'instruction'"),
    ],
)
def test_malformed_records_are_rejected_with_record_number(rows, fmt, match):
    with pytest.raises(DataError, match=match):
        parse(rows, fmt)


def test_unknown_role_mapping_target_is_rejected():
    with pytest.raises(DataError, match="data.roles.bot2: 'robot' must be system, user or assistant"):
        parse(
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
            roles={"bot2": "robot"},
        )
