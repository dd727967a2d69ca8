"""`builtin:arithmetic`: generated, seeded arithmetic problems with exact integer answers, for learning from a reward
(GRPO with `exact_answer`): records `{"prompt": <question>, "answer": "<integer>"}`. Nothing is downloaded.

Each problem is a start number and 1-3 operations (+ 40%, - 35%, × 25%) on small numbers, told either as a short
story ("Tom has 12 apples. Tom gives 5 apples to Anna. ...") or as a plain expression ("What is (12 - 5) × 3?", with
the parentheses that left-to-right evaluation needs). Every intermediate value and answer is a non-negative
integer (a subtraction never takes more than there is). The same options and seed give the same problems, in the
same order, on every machine (Python's `random.Random`); the prompts are all different.

Options, in the data reference after a '?', as a URL query (`builtin:arithmetic?n=500&steps=2&seed=1`):

    n           number of problems (default 2000)
    steps       operations per problem: one number (2) or a range (1-3, the default), each problem's count uniform
    max_number  largest start number and added / subtracted number (default 20; at least 2); multipliers are
                2..5, and a product never exceeds 200
    style       mixed (default: each problem a story or an expression, even odds) | words | expressions
    seed        the random seed (default 0)

`read_arithmetic(options)` returns the records as a DataFrame; `arithmetic_problems(...)` the problems with the
expression each encodes (for checking).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

import pandas as pd

from tuneforge.errors import DataError
from tuneforge.registry import closest

DEFAULTS = {"n": 2000, "steps": "1-3", "max_number": 20, "style": "mixed", "seed": 0}
STYLES = ("mixed", "words", "expressions")
MAX_FACTOR = 5
#: a multiplication is skipped when it would take the running value above this
MAX_VALUE = 200

NAMES = ("Tom", "Anna", "Li Wei", "Maria", "Sam", "Priya", "Omar", "Lena", "Kofi", "Yuki", "Ben", "Sofia")
#: (singular, plural)
ITEMS = (
    ("apple", "apples"),
    ("marble", "marbles"),
    ("sticker", "stickers"),
    ("book", "books"),
    ("coin", "coins"),
    ("pencil", "pencils"),
    ("cookie", "cookies"),
    ("card", "cards"),
    ("stamp", "stamps"),
    ("shell", "shells"),
)
STARTS = (
    "{name} has {n} {items}.",
    "{name} starts the day with {n} {items}.",
    "There are {n} {items} in {name}'s box.",
)
ADDS = (
    "{name} buys {n} more {items}.",
    "{friend} gives {name} {n} {items}.",
    "{name} finds {n} more {items}.",
    "{name} gets {n} {items} as a present.",
)
SUBTRACTS = (
    "{name} gives {n} {items} to {friend}.",
    "{name} loses {n} {items}.",
    "{name} sells {n} {items}.",
    "{name} uses {n} {items}.",
)
MULTIPLIES = {2: "The number of {all} {name} has doubles.", 3: "The number of {all} {name} has triples."}
MULTIPLY_ANY = "{name} now has {n} times as many {all} as before."
QUESTIONS = ("How many {all} does {name} have now?", "How many {all} does {name} have in the end?")
EXPRESSIONS = ("What is {e}?", "Calculate {e}.", "Compute {e}.", "Work out {e}.", "What is the value of {e}?")
TIMES = ("×", "*")


@dataclass(frozen=True)
class Problem:
    """A generated problem: the `prompt`, its `answer` (an integer), and `expression`, the arithmetic it encodes in
    Python syntax (`(12 - 5) * 3`), whose value is the answer."""

    prompt: str
    answer: int
    expression: str


def parse_options(query: str | None) -> dict:
    """The options of `builtin:arithmetic?<query>` (the part after '?', or None / "" for the defaults) as
    {n, min_steps, max_steps, max_number, style, seed}; a DataError names an unknown or malformed option."""
    given = dict(DEFAULTS)
    try:
        pairs = parse_qsl(query or "", keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise DataError(f"builtin:arithmetic?{query}: options are key=value pairs joined by '&'") from None
    for key, value in pairs:
        if key not in DEFAULTS:
            raise DataError(
                f"builtin:arithmetic has no option '{key}'{closest(key, DEFAULTS)}; options: {', '.join(DEFAULTS)}"
            )
        given[key] = value

    def integer(key: str, low: int) -> int:
        value = str(given[key]).strip()
        if not re.fullmatch(r"-?\d+", value) or int(value) < low:
            raise DataError(f"builtin:arithmetic: {key} must be an integer >= {low}, got {given[key]!r}")
        return int(value)

    steps = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(given["steps"]))
    if not steps or int(steps.group(1)) < 1 or int(steps.group(2) or steps.group(1)) < int(steps.group(1)):
        raise DataError(f"builtin:arithmetic: steps must be a number >= 1 or a range like 1-3, got {given['steps']!r}")
    if given["style"] not in STYLES:
        raise DataError(f"builtin:arithmetic: style must be one of {', '.join(STYLES)}, got {given['style']!r}")
    return {
        "n": integer("n", 1),
        "min_steps": int(steps.group(1)),
        "max_steps": int(steps.group(2) or steps.group(1)),
        "max_number": integer("max_number", 2),
        "style": given["style"],
        "seed": integer("seed", 0),
    }


def _operations(rng: random.Random, steps: int, max_number: int) -> tuple[int, list[tuple[str, int]]]:
    """A start number and `steps` operations that keep the running value a non-negative integer <= MAX_VALUE."""
    value = rng.randint(1, max_number)
    start, ops = value, []
    for _ in range(steps):
        r = rng.random()  # + 40%, - 35%, x 25%; + where the other would leave the range
        op = "+" if r < 0.4 else "-" if r < 0.75 else "*"
        if (op == "-" and value < 1) or (op == "*" and not 1 <= value <= MAX_VALUE // 2):
            op = "+"
        if op == "+":
            k = rng.randint(1, max_number)
            value += k
        elif op == "-":
            k = rng.randint(1, min(value, max_number))
            value -= k
        else:
            k = rng.randint(2, min(MAX_FACTOR, MAX_VALUE // value))
            value *= k
        ops.append((op, k))
    return start, ops


def _expression(start: int, ops: list[tuple[str, int]], times: str = "*") -> str:
    """The operations as an expression evaluated left to right: parentheses where a product follows a sum."""
    text, loose = str(start), False  # loose: a + or - at the top level of `text`
    for op, k in ops:
        if op == "*":
            text = f"({text}) {times} {k}" if loose else f"{text} {times} {k}"
            loose = False
        else:
            text, loose = f"{text} {op} {k}", True
    return text


def _story(rng: random.Random, start: int, ops: list[tuple[str, int]]) -> str:
    name, friend = rng.sample(NAMES, 2)
    singular, plural = rng.choice(ITEMS)

    def fill(template: str, n: int | None = None) -> str:
        items = singular if n == 1 else plural
        return template.format(name=name, friend=friend, n=n, items=items, all=plural)

    sentences = [fill(rng.choice(STARTS), start)]
    for op, k in ops:
        if op == "+":
            sentences.append(fill(rng.choice(ADDS), k))
        elif op == "-":
            sentences.append(fill(rng.choice(SUBTRACTS), k))
        else:
            sentences.append(fill(MULTIPLIES.get(k, MULTIPLY_ANY) if rng.random() < 0.5 else MULTIPLY_ANY, k))
    sentences.append(fill(rng.choice(QUESTIONS)))
    return " ".join(sentences)


def arithmetic_problems(
    n: int = 2000, min_steps: int = 1, max_steps: int = 3, max_number: int = 20, style: str = "mixed", seed: int = 0
) -> list[Problem]:
    """`n` different problems (see the module docstring); a DataError when the options allow fewer than `n`."""
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise DataError(
                f"builtin:arithmetic: only {len(problems)} different problems found for n={n} with steps "
                f"{min_steps}-{max_steps} and max_number {max_number}: ask for fewer, or allow more steps or larger "
                f"numbers"
            )
        steps = rng.randint(min_steps, max_steps)
        start, ops = _operations(rng, steps, max_number)
        expression = _expression(start, ops)
        answer = _evaluate(start, ops)
        words = style == "words" or (style == "mixed" and rng.random() < 0.5)
        if words:
            prompt = _story(rng, start, ops)
        else:
            shown = _expression(start, ops, rng.choice(TIMES))
            prompt = rng.choice(EXPRESSIONS).format(e=shown)
        if prompt not in seen:
            seen.add(prompt)
            problems.append(Problem(prompt, answer, expression))
    return problems


def _evaluate(start: int, ops: list[tuple[str, int]]) -> int:
    value = start
    for op, k in ops:
        value = value + k if op == "+" else value - k if op == "-" else value * k
    return value


def read_arithmetic(options: str | None = None) -> pd.DataFrame:
    """The records of `builtin:arithmetic?<options>` (options as in the module docstring, None for the defaults):
    columns `prompt` (the question) and `answer` (the integer answer as text)."""
    problems = arithmetic_problems(**parse_options(options))
    return pd.DataFrame({"prompt": [p.prompt for p in problems], "answer": [str(p.answer) for p in problems]})
