"""`builtin:arithmetic` (data/arithmetic.py): seeded, answers exact (re-evaluated here from the prompt's own
expression, or from the story's numbers), options respected and checked, and the `exact_answer` reward scores the
reference answer 1.0."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from tuneforge.data.arithmetic import arithmetic_problems, parse_options, read_arithmetic
from tuneforge.data.reward_functions import RewardSet
from tuneforge.data.sources import read_table
from tuneforge.errors import DataError

pytestmark = pytest.mark.unit

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate(expression: str) -> int:
    """An integer expression of + - * and parentheses, evaluated from its syntax tree (no eval)."""

    def walk(node):
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant) and isinstance(node.value, int), ast.dump(node)
        return node.value

    return walk(ast.parse(expression, mode="eval").body)


def operands(expression: str) -> list[tuple[str, int]]:
    """('start', n) then (op, n) for each operation of a left-to-right expression."""
    tokens = re.findall(r"\d+|[-+*]", expression)
    return [("start", int(tokens[0]))] + [(tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2)]


def solve_story(prompt: str) -> int:
    """A story problem solved from its own sentences: the first gives the start, each next one an operation."""
    sentences = re.split(r"(?<=\.) ", prompt)
    assert sentences[-1].startswith("How many") and sentences[-1].endswith("?"), prompt
    value = int(re.search(r"\d+", sentences[0]).group())
    for sentence in sentences[1:-1]:
        numbers = re.findall(r"\d+", sentence)
        assert len(numbers) <= 1, sentence
        if "times as many" in sentence or re.search(r"\b(doubles|triples)\.$", sentence):
            value *= int(numbers[0]) if numbers else 2 if "doubles" in sentence else 3
        elif re.search(r"\b(loses|sells|uses) \d+ ", sentence) or re.search(r"gives \d+ \w+ to \w", sentence):
            value -= int(numbers[0])
        elif re.search(r"\b(buys|finds|gets) \d+ ", sentence) or re.search(r"gives .+ \d+ \w+\.$", sentence):
            value += int(numbers[0])
        else:
            raise AssertionError(f"no operation in {sentence!r}")
        assert value >= 0, prompt
    return value


@pytest.fixture(scope="module")
def default_problems():
    return arithmetic_problems(**parse_options(None))


def test_defaults_are_deterministic_and_distinct(default_problems):
    assert len(default_problems) == 2000
    assert arithmetic_problems(**parse_options("")) == default_problems
    assert len({p.prompt for p in default_problems}) == 2000
    other = arithmetic_problems(**parse_options("seed=1"))
    assert [p.prompt for p in other] != [p.prompt for p in default_problems]
    steps = {len(operands(p.expression)) - 1 for p in default_problems}
    assert steps == {1, 2, 3}
    stories = sum("How many" in p.prompt for p in default_problems)
    assert 800 < stories < 1200  # mixed: about half stories, half expressions
    assert any("(" in p.expression for p in default_problems)


def test_answers_are_exact(default_problems):
    for p in default_problems:
        assert evaluate(p.expression) == p.answer >= 0, p
        if "How many" not in p.prompt:
            # the expression the prompt shows is the one encoded, and evaluates to the answer
            shown = re.search(r"(?:What is the value of|What is|Calculate|Compute|Work out) (.+?)[?.]$", p.prompt)
            assert shown, p.prompt
            assert shown.group(1).replace("×", "*") == p.expression
            continue
        assert solve_story(p.prompt) == p.answer, p


def test_hand_checked_problems():
    """The first problems of the default set, checked by hand: the generator is pinned (same seed, same data)."""
    problems = read_arithmetic("n=4")
    assert problems.to_dict("records") == [
        {"prompt": "What is the value of 14 + 17 - 10?", "answer": "21"},
        {"prompt": "What is the value of 17 + 5?", "answer": "22"},
        {
            "prompt": "Anna starts the day with 20 cookies. Anna now has 4 times as many cookies as before. Priya "
            "gives Anna 3 cookies. Anna now has 2 times as many cookies as before. How many cookies does Anna "
            "have in the end?",
            "answer": "166",  # (20 * 4 + 3) * 2
        },
        {"prompt": "What is (17 + 18) * 2?", "answer": "70"},
    ]


def test_options_are_respected():
    problems = arithmetic_problems(**parse_options("n=300&steps=2&max_number=5&style=expressions&seed=3"))
    assert len(problems) == 300
    for p in problems:
        ops = operands(p.expression)
        assert len(ops) == 3
        assert all(n <= 5 for op, n in ops if op != "*")
        assert all(2 <= n <= 5 for op, n in ops if op == "*")
        assert "How many" not in p.prompt
    words = arithmetic_problems(**parse_options("n=50&steps=1-2&style=words"))
    assert all(p.prompt.endswith("?") and "How many" in p.prompt for p in words)
    assert {len(operands(p.expression)) - 1 for p in words} == {1, 2}
    assert parse_options("steps=3") == {
        "n": 2000,
        "min_steps": 3,
        "max_steps": 3,
        "max_number": 20,
        "style": "mixed",
        "seed": 0,
    }


@pytest.mark.parametrize(
    "query, message",
    [
        ("count=5", "builtin:arithmetic has no option 'count'"),
        ("sed=1", "no option 'sed' (did you mean 'seed'?)"),
        ("n=0", "n must be an integer >= 1, got '0'"),
        ("n=abc", "n must be an integer >= 1, got 'abc'"),
        ("steps=3-1", "steps must be a number >= 1 or a range like 1-3, got '3-1'"),
        ("steps=0", "steps must be a number >= 1"),
        ("style=poem", "style must be one of mixed, words, expressions, got 'poem'"),
        ("max_number=1", "max_number must be an integer >= 2"),
        ("n", "options are key=value pairs joined by '&'"),
    ],
)
def test_bad_options_are_one_line_data_errors(query, message):
    with pytest.raises(DataError) as err:
        parse_options(query)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_too_few_distinct_problems():
    with pytest.raises(DataError, match="only .* different problems found for n=1000"):
        arithmetic_problems(n=1000, min_steps=1, max_steps=1, max_number=2, style="expressions")


def test_builtin_data_set_and_exact_answer_reward():
    table = read_table("builtin:arithmetic")
    assert list(table.columns) == ["prompt", "answer"] and len(table) == 2000
    assert table.equals(read_arithmetic())
    assert all(re.fullmatch(r"\d+", a) for a in table["answer"])
    rows = table.head(200)
    prompts, answers = list(rows["prompt"]), list(rows["answer"])
    rewards = RewardSet([{"name": "exact_answer"}])
    fields = {"answer": answers}
    assert rewards(prompts, answers, fields).total == [1.0] * 200
    worded = [f"Step by step: 3 + 4 = 7, so the answer is {a}." for a in answers]
    assert rewards(prompts, worded, fields).total == [1.0] * 200
    wrong = [f"The answer is {int(a) + 1}." for a in answers]
    assert rewards(prompts, wrong, fields).total == [0.0] * 200


def test_builtin_options_after_a_question_mark():
    table = read_table("builtin:arithmetic?n=50&steps=2&seed=3")
    assert len(table) == 50 and table.equals(read_arithmetic("n=50&steps=2&seed=3"))
    with pytest.raises(DataError, match=r"builtin:identity takes no options"):
        read_table("builtin:identity?n=5")
