"""Reward functions (data/reward_functions.py): each builtin on hand-made examples, user functions from files and
modules, every failure as one line of the right type (specs: ConfigError; scores: DataError, or 0.0 counted with
errors="zero"), and the weighted total."""

from __future__ import annotations

import math
import textwrap

import pytest
from trl.rewards import get_repetition_penalty_reward

from tuneforge.data.reward_functions import RewardSet, last_boxed, last_number, load_reward
from tuneforge.errors import ConfigError, DataError

pytestmark = pytest.mark.unit


def score(spec, completions, prompts=None, tokenize=None, **fields) -> list[float]:
    prompts = prompts or [f"question {i}" for i in range(len(completions))]
    return RewardSet([spec], tokenize=tokenize)(prompts, completions, fields).total


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# ---- exact_answer ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("The answer is 1,234.", "1234", 1.0),
        ("So we get 1234", "1,234", 1.0),
        ("It costs $1,000.00 in total", "1000", 1.0),
        ("The temperature falls to -5 degrees.", "-5", 1.0),
        ("10 - 15 = -5", "-5", 1.0),
        ("10-3 = 7", "7", 1.0),  # a '-' after a digit is the operator
        ("x = 3.50", "3.5", 1.0),
        ("half is .5", "0.5", 1.0),
        ("72 apples, no wait, 73", "72", 0.0),  # the LAST number counts
        ("I do not know", "72", 0.0),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "#### 72", 1.0),  # GSM8K-style reference
        ("The answer is 72", 72, 1.0),  # a numeric reference
        ("The answer is 0.1", 0.1, 1.0),
        ("The answer is 72.", "72.0", 1.0),
        ("H2O has 3 atoms", "3", 1.0),  # digits inside a word are not a number
        ("answer: 12", "-12", 0.0),
    ],
)
def test_exact_answer_last_number(completion, answer, expected):
    assert score({"name": "exact_answer"}, [completion], answer=[answer]) == [expected]


def test_last_number_values():
    assert last_number("1,234,567.25 and then 2") == 2
    assert last_number("total: 1,234,567.25") == pytest.approx(1234567.25)
    assert last_number("minus -0.75") == -0.75
    assert last_number("none") is None


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        (r"so \boxed{\frac{1}{2}}", r"\frac{1}{2}", 1.0),
        (r"so \boxed{\frac{1}{2}}", "0.5", 1.0),
        (r"so \boxed{\dfrac{1}{2}}", "1/2", 1.0),
        (r"so \boxed{ \frac{1}{3} }", r"\frac{1}{2}", 0.0),
        (r"\boxed{1} first, then \boxed{1,234}", "1234", 1.0),  # the last box
        (r"\boxed{x^{2} + 1}", "x^{2}+1", 1.0),  # nested braces, spaces ignored
        (r"\boxed{-\frac{3}{4}}", "-0.75", 1.0),
        (r"The answer is $\boxed{42}$.", r"$\boxed{42}$", 1.0),  # a boxed reference is unboxed too
        (r"\boxed{42", "42", 0.0),  # unbalanced: no answer
        ("42", "42", 0.0),  # no box
        (r"\boxed{\left(1, 2\right)}", "(1,2)", 1.0),
    ],
)
def test_exact_answer_boxed(completion, answer, expected):
    assert score({"name": "exact_answer", "extract": "boxed"}, [completion], answer=[answer]) == [expected]


def test_last_boxed():
    assert last_boxed(r"\boxed{a{b}c} \boxed {d}") == "d"
    assert last_boxed(r"\boxed{a{b}c} \boxed{d") == "a{b}c"
    assert last_boxed("nothing") is None


def test_exact_answer_regex_and_column():
    spec = {"name": "exact_answer", "extract": r"regex:Answer:\s*(\S+)", "column": "solution"}
    completions = ["Answer: 42", "Answer: 7\nAnswer: 8", "answer: 42", "Answer: Paris."]
    assert score(spec, completions, solution=["42", "8", "42", "Paris"]) == [1.0, 1.0, 0.0, 1.0]
    # without a group the whole match is the answer
    assert score({"name": "exact_answer", "extract": r"regex:\d+"}, ["a 4 b 5"], answer=["5"]) == [1.0]


def test_exact_answer_reads_chat_completions():
    completion = [{"role": "assistant", "content": "It is 12."}]
    assert score({"name": "exact_answer"}, [completion], answer=["12"]) == [1.0]


def test_exact_answer_data_problems_stop_even_when_errors_are_zeroed():
    rewards = RewardSet([{"name": "exact_answer"}], errors="zero")
    with pytest.raises(DataError) as err:
        rewards(["q"], ["1"], {"answr": ["1"]})
    assert "no column 'answer' (did you mean 'answr'?)" in one_line(err)
    with pytest.raises(DataError) as err:
        rewards(["q", "q"], ["1", "2"], {"answer": ["1", "no idea"]})
    assert "record 1 has no number in its reference 'answer'" in one_line(err)


# ---- format, length, repetition -------------------------------------------------------------------------------------
def test_format():
    think = r"<think>.*?</think>\s*<answer>.*?</answer>"
    good, bad = "<think>\nhmm\n</think>\n<answer>4</answer>", "<answer>4</answer>"
    assert score({"name": "format", "pattern": think, "match": "full"}, [good, bad, good + " extra"]) == [1, 0, 0]
    assert score({"name": "format", "pattern": think}, [good + " extra"]) == [1.0]  # search
    assert score({"name": "format", "pattern": "a.b", "dotall": False}, ["a\nb", "axb"]) == [0.0, 1.0]


def test_length():
    spec = {"name": "length", "target": 10}
    assert score(spec, ["x" * 10, "x" * 5, "", "x" * 20, "x" * 25]) == [0.0, -0.5, -1.0, -1.0, -1.5]
    assert score({"name": "length", "target": 4, "per": "words"}, ["one two three four", "a b"]) == [0.0, -0.5]
    tokenize = lambda text: text.split("-")  # noqa: E731
    assert score({"name": "length", "target": 2, "per": "tokens"}, ["a-b-c"], tokenize=tokenize) == [-0.5]


def test_repetition_matches_trl():
    assert score({"name": "repetition"}, ["a b c a b c", "one two", "a b c d"]) == [-0.25, 0.0, 0.0]
    trl = get_repetition_penalty_reward(ngram_size=2, max_penalty=-1.0)
    ids = [[1, 2, 3, 4], [5, 5, 5, 5, 5], [1, 2, 1, 2, 1, 2, 3], [1]]
    texts = [" ".join(map(str, x)) for x in ids]
    tokenize = lambda text: [int(t) for t in text.split()]  # noqa: E731
    ours = score({"name": "repetition", "n": 2, "per": "tokens"}, texts, tokenize=tokenize)
    assert ours == pytest.approx(trl(completion_ids=ids)) and ours[1] == -0.75
    assert score({"name": "repetition", "n": 1, "per": "chars"}, ["aab"]) == [pytest.approx(-1 / 3)]


# ---- user functions -------------------------------------------------------------------------------------------------
REWARDS_PY = """
def score(prompts, completions, answer, **fields):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]

class Scorer:
    @staticmethod
    def by_length(prompts, completions, **fields):
        return [len(c) for c in completions]

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "rewards.py").write_text(REWARDS_PY)
    (tmp_path / "pkg_rewards_mod.py").write_text(REWARDS_PY)
    (tmp_path / "broken.py").write_text("def score(prompts, completions:\n    return []\n")
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "bad_helper_import.py").write_text("import not_a_module_xyz\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_user_functions_from_files_and_modules(user_dir):
    rewards = RewardSet(
        [
            {"name": "rewards.py:score", "weight": 2.0},
            {"name": "pkg_rewards_mod:Scorer.by_length", "weight": 0.5},
            {"name": f"{user_dir / 'rewards.py'}:score"},  # an absolute path
        ]
    )
    assert rewards.names == ["score", "by_length", "score_2"]
    total, per, errors = rewards(["q1", "q2"], ["4", " 5 "], {"answer": ["4", "6"]})
    assert per == {"score": [1.0, 0.0], "by_length": [1.0, 3.0], "score_2": [1.0, 0.0]}
    assert total == [2.0 * 1 + 0.5 * 1 + 1, 2.0 * 0 + 0.5 * 3 + 0]
    assert errors == {"score": 0, "by_length": 0, "score_2": 0}
    # a relative path from another directory
    other = RewardSet([{"name": "rewards.py:score"}], base_dir=user_dir)
    assert other.rewards[0].func(prompts=["q"], completions=["1"], answer=["1"]) == [1.0]


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.py:score", "task.rewards[1]: reward file missing.py not found"),
        ("rewards.py:scor", "task.rewards[1]: no function 'scor' in rewards.py (did you mean 'score'?)"),
        (
            "rewards.py:NOT_A_FUNCTION",
            "task.rewards[1]: 'NOT_A_FUNCTION' in rewards.py is not a function (it is a int)",
        ),
        ("broken.py:score", "task.rewards[1]: broken.py cannot be imported: SyntaxError: "),
        ("raises_on_import.py:f", "task.rewards[1]: raises_on_import.py cannot be imported: RuntimeError: no GPU here"),
        ("bad_helper_import:f", "bad_helper_import cannot be imported: ModuleNotFoundError: No module named"),
        ("no_such_module_xyz:f", "task.rewards[1]: no module named 'no_such_module_xyz'"),
        ("pkg_rewards_mod:Scorer.nope", "task.rewards[1]: no function 'Scorer.nope' in pkg_rewards_mod"),
        ("exact_answr", "task.rewards[1]: unknown reward 'exact_answr' (did you mean 'exact_answer'?)"),
        (":score", "must be 'path/to/file.py:function' or 'module:function'"),
    ],
)
def test_bad_user_specs_are_one_line_config_errors(user_dir, name, message):
    with pytest.raises(ConfigError) as err:
        RewardSet([{"name": "format", "pattern": "x"}, {"name": name}])
    assert message in one_line(err)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "exact_answer", "colum": "x"}, "exact_answer has no option 'colum' (did you mean 'column'?)"),
        ({"name": "exact_answer", "extract": "first"}, "extract must be last_number, boxed or regex:<pattern>"),
        ({"name": "exact_answer", "extract": 3}, "extract must be last_number, boxed or regex:<pattern>, got '3'"),
        ({"name": "exact_answer", "column": None}, "column must be a column name, got None"),
        ({"name": "format", "pattern": "x", "dotall": "yes"}, "dotall must be true or false"),
        ({"name": "exact_answer", "extract": "regex:("}, "is not a valid regular expression"),
        ({"name": "format"}, "format needs the option `pattern`"),
        ({"name": "format", "pattern": "(["}, "is not a valid regular expression"),
        ({"name": "format", "pattern": "x", "match": "all"}, "match must be search or full"),
        ({"name": "length"}, "length needs the option `target`, a number > 0"),
        ({"name": "length", "target": 10, "per": "tokens"}, "per: tokens needs the run's tokenizer"),
        ({"name": "length", "target": 10, "per": "lines"}, "per must be one of chars, words, tokens"),
        ({"name": "repetition", "n": 0}, "n must be an integer >= 1"),
        ({"name": "format", "pattern": "x", "weight": "high"}, "weight must be a finite number"),
        ({"name": "format", "pattern": "x", "weight": float("nan")}, "weight must be a finite number"),
        ({"weight": 1.0}, "a reward needs a `name`"),
        ({"name": "rewards.py:score", "column": "x"}, "options (column) are for builtin rewards"),
    ],
)
def test_bad_specs_are_one_line_config_errors(user_dir, spec, message):
    with pytest.raises(ConfigError) as err:
        load_reward(spec, "task.rewards[0]")
    assert message in one_line(err) and one_line(err).startswith("task.rewards[0]: ")


def test_set_arguments_are_checked():
    with pytest.raises(ConfigError, match="give at least one reward"):
        RewardSet([])
    with pytest.raises(ConfigError, match="reward errors must be raise or zero"):
        RewardSet(["format"], errors="ignore")
    rewards = RewardSet([{"name": "format", "pattern": "x"}])
    with pytest.raises(ValueError, match="3 completions but 2 prompts"):
        rewards(["a", "b"], ["x", "y", "z"])


# ---- failures of a reward function ----------------------------------------------------------------------------------
FAILING_PY = """
import math

def raises(prompts, completions, **fields):
    raise ValueError("cannot parse\\nsecond line")

def raises_on_boom(prompts, completions, **fields):
    return [1.0 if "boom" not in c else 1 / 0 for c in completions]

def raises_on_batches(prompts, completions, **fields):
    if len(completions) > 1:
        raise RuntimeError("batches are not supported")
    return [1.0]

def wrong_length(prompts, completions, **fields):
    return [1.0]

def a_number(prompts, completions, **fields):
    return 1.0

def nan(prompts, completions, **fields):
    return [1.0, math.nan, 1.0]

def inf(prompts, completions, **fields):
    return [1.0, 1.0, -math.inf]

def a_string(prompts, completions, **fields):
    return [1.0, "0.5", 1.0]

def none(prompts, completions, **fields):
    return [None, 1.0, 1.0]
"""

PROMPTS = [
    "What is 2 + 2?",
    [{"role": "user", "content": "A chat prompt that goes on and on and on and on and on"}],
    "x",
]
COMPLETIONS = ["4", "boom", "6"]


FAILURES = [
    (
        "raises_on_boom",
        "record 1 ('A chat prompt that goes on and on and o…')",
        "raised ZeroDivisionError: division by zero",
        [1.0, 0.0, 1.0],
        1,
    ),
    ("raises", "record 0 ('What is 2 + 2?')", "raised ValueError: cannot parse", [0.0, 0.0, 0.0], 3),
    ("raises_on_batches", "records 0-2", "raised RuntimeError: batches are not supported", [0.0] * 3, 3),
    ("wrong_length", "records 0-2", "returned 1 scores for 3 completions", [0.0] * 3, 3),
    ("a_number", "records 0-2", "returned 1.0 instead of a list of 3 numbers", [0.0] * 3, 3),
    ("nan", "record 1", "returned nan", [1.0, 0.0, 1.0], 1),
    ("inf", "record 2 ('x')", "returned -inf", [1.0, 1.0, 0.0], 1),
    ("a_string", "record 1", "returned '0.5'", [1.0, 0.0, 1.0], 1),
    ("none", "record 0", "returned None", [0.0, 1.0, 1.0], 1),
]


@pytest.mark.parametrize("func, record, what, zero_scores, count", FAILURES, ids=[f[0] for f in FAILURES])
def test_failing_rewards(tmp_path, monkeypatch, func, record, what, zero_scores, count):
    (tmp_path / "failing.py").write_text(FAILING_PY)
    monkeypatch.chdir(tmp_path)
    specs = [{"name": f"failing.py:{func}", "weight": 2.0}, {"name": "length", "target": 1}]
    with pytest.raises(DataError) as err:
        RewardSet(specs)(PROMPTS, COMPLETIONS, {"answer": ["4", "4", "4"]})
    message = one_line(err)
    assert message.startswith(f"reward '{func}' (task.rewards[0]) failed on {record}"), message
    assert what in message
    total, per, errors = RewardSet(specs, errors="zero")(PROMPTS, COMPLETIONS, {"answer": ["4", "4", "4"]})
    assert per[func] == zero_scores and errors == {func: count, "length": 0}
    assert total == [2.0 * s + length for s, length in zip(zero_scores, [0.0, -3.0, 0.0])]
    assert all(math.isfinite(t) for t in total)


def test_tensor_and_array_returns_are_scores(tmp_path, monkeypatch):
    (tmp_path / "arrays.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import torch

            def as_tensor(prompts, completions, **fields):
                return torch.tensor([0.5] * len(completions))

            def as_array(prompts, completions, **fields):
                return np.array([True, False])
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    rewards = RewardSet(["arrays.py:as_tensor", "arrays.py:as_array"])
    total, per, _ = rewards(["p", "q"], ["a", "b"])
    assert per == {"as_tensor": [0.5, 0.5], "as_array": [1.0, 0.0]}
    assert total == [1.5, 0.5]


def test_weights_are_summed():
    rewards = RewardSet(
        [
            {"name": "exact_answer", "weight": 1.0},
            {"name": "format", "pattern": r"answer is", "weight": 0.25},
            {"name": "format", "pattern": r"^\d+$", "weight": -0.5},
            {"name": "length", "target": 10, "weight": 0.0},
        ]
    )
    assert rewards.names == ["exact_answer", "format", "format_2", "length"]
    total, per, errors = rewards(["q", "q"], ["the answer is 7", "8"], {"answer": ["7", "7"]})
    assert per == {"exact_answer": [1.0, 0.0], "format": [1.0, 0.0], "format_2": [0.0, 1.0], "length": [-0.5, -0.9]}
    assert total == [1.25, -0.5] and errors == dict.fromkeys(rewards.names, 0)


def test_a_reward_file_may_import_its_neighbours(tmp_path, monkeypatch):
    (tmp_path / "helpers_for_reward.py").write_text("def one():\n    return 1.0\n")
    (tmp_path / "uses_helper.py").write_text(
        textwrap.dedent(
            """
            from helpers_for_reward import one

            def reward(prompts, completions, **fields):
                return [one() for _ in completions]
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    assert score({"name": "uses_helper.py:reward"}, ["a", "b"]) == [1.0, 1.0]
