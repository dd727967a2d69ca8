"""Reward functions for reinforcement learning from rewards (GRPO): builtin rewards and the user's own functions,
given as specs, and `RewardSet`, which scores a batch of completions with all of them and keeps every failure to
one line. One concern (over 400 lines): turning reward specs into checked scores, builtins included.

A spec is what the config gives, a dict (or just a name):

    {"name": "exact_answer", "weight": 1.0, "column": "answer", "extract": "last_number"}
    {"name": "path/to/file.py:func"}          a function in a Python file (relative to the current directory,
                                              or to `base_dir`); the file's folder is on sys.path while it loads
    {"name": "package.module:func"}           a function in an importable module (`func` may be dotted: Class.method)
    {"run": "runs/rm", "weight": 0.5}         a finished reward run (task.type: reward) scoring prompt + completion
                                              (data/reward_runs.py); named after its directory

`weight` (default 1.0) multiplies the reward in the total; the other keys are a builtin's options (user functions
take none). A user function is called as TRL calls its reward functions, with keywords:

    func(prompts=prompts, completions=completions, **fields) -> list[float]

`prompts` the batch's prompts (as the data has them: text, or a list of chat messages), `completions` the generated
texts (list[str]), `fields` the records' other columns, each a list as long as the batch (for example
`answer=[...]`; keys named `prompts` or `completions` are not passed). It returns one number per completion.

Builtins (their options, defaults first; the completion may also be a list of chat messages: its messages' contents,
joined, are scored):

* `exact_answer` (`column`: answer, `extract`: last_number | boxed | regex:<pattern>): 1.0 when the answer taken
  from the completion equals the record's reference (field `column`), else 0.0 (also when the completion has none).
  `last_number`: the last number in the completion (an integer or decimal, optionally negative, with thousands
  commas such as 1,234; a '-' right after a letter or digit is an operator, not a sign) against the last number of
  the reference text (or the reference itself when it is a number), compared exactly as fractions (72 == 72.0).
  `boxed`: the content of the completion's last `\\boxed{...}` (nested braces balanced) against the reference (its
  own last \\boxed{} content when it has one). `regex:<pattern>`: group 1 of the pattern's last match in the
  completion (the whole match when the pattern has no group) against the whole reference. boxed and regex compare
  after normalising both sides (surrounding $ and a trailing '.', spaces, \\left / \\right, \\dfrac -> \\frac
  removed or mapped); two sides that both read as numbers (1,234 / -0.5 / 1/2 / \\frac{1}{2}) compare as fractions,
  otherwise as the normalised texts. A record whose reference holds no number (last_number), or a batch without the
  column, is a DataError.
* `format` (`pattern`: required, `match`: search | full, `dotall`: true): 1.0 when re.search (or re.fullmatch) of
  the pattern finds the completion, else 0.0; compiled with re.DOTALL unless `dotall: false`.
* `length` (`target`: required, > 0, `per`: chars | words | tokens): -|length - target| / target, the length of the
  completion in characters, whitespace-separated words or tokens (tokens need RewardSet's `tokenize`): 0.0 on
  target, -1.0 at twice the target or empty.
* `repetition` (`n`: 3, `per`: words | tokens | chars): -(1 - unique n-grams / all n-grams) over the completion's
  words (whitespace-separated), tokens or characters; 0.0 with fewer than n of them (TRL's repetition penalty with
  max_penalty -1, which counts token ids).

Failures of a function (it raises, returns something other than a list/tuple/array of len(completions) numbers, or a
number that is NaN or infinite; None and strings are failures) are one-line DataErrors naming the reward, the record
and what went wrong, or, with `errors="zero"`, scores of 0.0 counted per reward. When a call raises, each record is
scored on its own to find the failing ones (so a function is then called again; the other records keep their
scores). A tuneforge error (ConfigError, DataError, ...) raised inside a reward passes through unchanged. Bad specs
are one-line ConfigErrors naming the spec (`task.rewards[1]: no function 'score' in rewards.py`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import numbers
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

from tuneforge.errors import ConfigError, DataError, TuneforgeError, first_line
from tuneforge.registry import closest

ERROR_MODES = ("raise", "zero")
#: a number in text: optional sign (not right after a letter/digit), thousands commas, decimals, or .5
NUMBER = re.compile(r"(?<![\w.])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?!\w)")
_FRAC = re.compile(r"^(-?)\\frac\{([^{}]+)\}\{([^{}]+)\}$")

# ---- answers --------------------------------------------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The text of a completion: itself, or the contents of a list of chat messages joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in completion)
    return "" if completion is None else str(completion)


def last_number(text: str) -> Fraction | None:
    """The last number in `text` as an exact fraction ("1,234.5" -> 2469/2), or None."""
    found = NUMBER.findall(text)
    return Fraction(found[-1].replace(",", "")) if found else None


def last_boxed(text: str) -> str | None:
    """The content of the last well-formed `\\boxed{...}` in `text` (balanced braces), or None."""
    for start in reversed([m.end() for m in re.finditer(r"\\boxed\s*\{", text)]):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
    return None


def normalise_answer(text: str) -> str:
    """An answer text without what does not change it: spaces, surrounding $, a trailing '.', \\left / \\right and
    LaTeX spacing commands, \\dfrac / \\tfrac written \\frac."""
    t = re.sub(r"\\(left|right)\b|\\[,;!]|\s+", "", text.strip().strip("$").strip())
    return t.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")


def as_number(text: str) -> Fraction | None:
    """A normalised answer as an exact fraction: 1,234 / -0.5 / 3/4 / \\frac{3}{4} / -\\frac{3}{4}; else None."""
    if NUMBER.fullmatch(text):
        return Fraction(text.replace(",", ""))
    m = _FRAC.match(text) or re.fullmatch(r"(-?)(\d+)/(\d+)", text)
    if m and all(NUMBER.fullmatch(p) for p in m.groups()[1:]) and Fraction(m.group(3).replace(",", "")) != 0:
        value = Fraction(m.group(2).replace(",", "")) / Fraction(m.group(3).replace(",", ""))
        return -value if m.group(1) else value
    return None


def same_answer(a: str, b: str) -> bool:
    """Whether two answer texts agree: as numbers when both read as one, else as normalised texts."""
    a, b = normalise_answer(a), normalise_answer(b)
    x, y = as_number(a), as_number(b)
    return x == y if x is not None and y is not None else a == b


# ---- builtins -------------------------------------------------------------------------------------------------------


def _column(where: str, fields: dict, column: str) -> list:
    if column not in fields:
        raise DataError(
            f"{where}: exact_answer: the records have no column '{column}'{closest(column, fields)} (their columns: "
            f"{', '.join(fields) or 'none'}); set the reward's `column` option"
        )
    return list(fields[column])


def _reference_number(where: str, ref: Any, index: int, column: str) -> Fraction:
    if isinstance(ref, numbers.Real) and not isinstance(ref, bool) and math.isfinite(ref):
        return Fraction(int(ref)) if isinstance(ref, numbers.Integral) else Fraction(str(float(ref)))
    value = last_number(str(ref)) if isinstance(ref, str) else None
    if value is None:
        raise DataError(
            f"{where}: exact_answer: record {index} has no number in its reference '{column}': {str(ref)[:60]!r}"
        )
    return value


def _exact_answer(where: str, column: str = "answer", extract: str = "last_number", **_: Any) -> Callable:
    if not isinstance(column, str) or not column:
        raise ConfigError(f"{where}: exact_answer: column must be a column name, got {column!r}")
    extract = extract if isinstance(extract, str) else repr(extract)
    if extract.startswith("regex:"):
        try:
            pattern = re.compile(extract[len("regex:") :], re.DOTALL)
        except re.error as exc:
            raise ConfigError(
                f"{where}: exact_answer: extract {extract!r} is not a valid regular expression: {exc}"
            ) from None
    elif extract not in ("last_number", "boxed"):
        raise ConfigError(
            f"{where}: exact_answer: extract must be last_number, boxed or regex:<pattern>, got {extract!r}"
        )

    def exact_answer(prompts, completions, **fields) -> list[float]:
        refs = _column(where, fields, column)
        out = []
        for i, (c, ref) in enumerate(zip(completions, refs)):
            text = completion_text(c)
            if extract == "last_number":
                got = last_number(text)
                out.append(float(got is not None and got == _reference_number(where, ref, i, column)))
                continue
            if extract == "boxed":
                got, want = last_boxed(text), str(ref)
                want = last_boxed(want) or want
            else:
                matches = list(pattern.finditer(text))
                got = (matches[-1].group(1) if pattern.groups else matches[-1].group(0)) if matches else None
                want = str(ref)
            out.append(float(got is not None and same_answer(got, want)))
        return out

    return exact_answer


def _format(where: str, pattern: str | None = None, match: str = "search", dotall: bool = True, **_: Any) -> Callable:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: format needs the option `pattern` (a regular expression)")
    if not isinstance(dotall, bool):
        raise ConfigError(f"{where}: format: dotall must be true or false, got {dotall!r}")
    if match not in ("search", "full"):
        raise ConfigError(f"{where}: format: match must be search or full, got {match!r}")
    try:
        compiled = re.compile(pattern, re.DOTALL if dotall else 0)
    except re.error as exc:
        raise ConfigError(f"{where}: format: pattern {pattern!r} is not a valid regular expression: {exc}") from None
    find = compiled.search if match == "search" else compiled.fullmatch

    def format_reward(prompts, completions, **fields) -> list[float]:
        return [float(find(completion_text(c)) is not None) for c in completions]

    return format_reward


def _units(where: str, per: str, choices: tuple[str, ...], tokenize: Callable | None) -> Callable[[str], Sequence]:
    if per not in choices:
        raise ConfigError(f"{where}: per must be one of {', '.join(choices)}, got {per!r}")
    if per == "tokens" and tokenize is None:
        raise ConfigError(f"{where}: per: tokens needs the run's tokenizer, which was not given to the rewards")
    return {"chars": list, "words": str.split, "tokens": tokenize}[per]


def _length(where, target=None, per="chars", tokenize=None, **_: Any) -> Callable:
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not target > 0 or math.isinf(target):
        raise ConfigError(f"{where}: length needs the option `target`, a number > 0 (got {target!r})")
    units = _units(where, per, ("chars", "words", "tokens"), tokenize)

    def length(prompts, completions, **fields) -> list[float]:
        return [-abs(len(units(completion_text(c))) - target) / target for c in completions]

    return length


def _repetition(where, n=3, per="words", tokenize=None, **_: Any) -> Callable:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{where}: repetition: n must be an integer >= 1, got {n!r}")
    units = _units(where, per, ("words", "tokens", "chars"), tokenize)

    def repetition(prompts, completions, **fields) -> list[float]:
        out = []
        for c in completions:
            seq = list(units(completion_text(c)))
            grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
            out.append(-(1 - len(set(grams)) / len(grams)) if grams else 0.0)
        return out

    return repetition


#: builtin name -> (factory(where, **options, tokenize=...), its options)
BUILTIN_REWARDS: dict[str, tuple[Callable[..., Callable], tuple[str, ...]]] = {
    "exact_answer": (_exact_answer, ("column", "extract")),
    "format": (_format, ("pattern", "match", "dotall")),
    "length": (_length, ("target", "per")),
    "repetition": (_repetition, ("n", "per")),
}

# ---- user functions -------------------------------------------------------------------------------------------------


def _load_file(where: str, target: str, base_dir: Path | None):
    path = Path(target).expanduser()
    path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
    if not path.is_file():
        raise ConfigError(f"{where}: reward file {target} not found" + (f" (in {base_dir})" if base_dir else ""))
    name = "tuneforge_reward_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"{where}: {target} cannot be imported: SyntaxError: {exc.msg} (line {exc.lineno})") from None
    except BaseException as exc:  # a user's file may raise anything, SystemExit too
        sys.modules.pop(name, None)
        raise ConfigError(f"{where}: {target} cannot be imported: {first_line(exc, with_type=True)}") from None
    finally:
        if str(path.parent) in sys.path:
            sys.path.remove(str(path.parent))
    return module


def _load_module(where: str, target: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise ConfigError(f"{where}: no module named '{target}' (a reward 'module:function')") from None
        raise ConfigError(f"{where}: {target} cannot be imported: {first_line(exc, with_type=True)}") from None
    except BaseException as exc:
        raise ConfigError(f"{where}: {target} cannot be imported: {first_line(exc, with_type=True)}") from None


def load_function(where: str, name: str, base_dir: Path | None = None) -> Callable:
    """The user function named `path/to/file.py:func` or `module:func`; ConfigError (one line, naming `where`) for a
    missing file or module, one that cannot be imported (its first error line), a missing or non-callable name."""
    target, _, attr = name.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"{where}: reward {name!r} must be 'path/to/file.py:function' or 'module:function'")
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    module = _load_file(where, target, base_dir) if is_file else _load_module(where, target)
    shown = Path(target).name if is_file else target
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            raise ConfigError(f"{where}: no function '{attr}' in {shown}{closest(attr, names)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{where}: '{attr}' in {shown} is not a function (it is a {type(obj).__name__})")
    return obj


# ---- specs and the set ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reward:
    """One reward of a set: its `name` in the scores (the builtin's name or the function's, `_2`, `_3` ... for a
    repeat), `weight`, the callable, `where` its spec is (`task.rewards[1]`) and `spec_name` as the spec gave it."""

    name: str
    weight: float
    func: Callable
    where: str
    spec_name: str


def load_reward(
    spec: dict | str,
    where: str,
    tokenize: Callable[[str], Sequence] | None = None,
    base_dir: Path | None = None,
    score_run: Callable | None = None,
) -> Reward:
    """A spec (see the module docstring) as a Reward; ConfigError naming `where` for anything wrong with it.
    `tokenize` (text -> token ids) serves the `per: tokens` options; `base_dir` resolves relative file paths;
    `score_run` loads a `run:` reward's model (data/reward_runs.py)."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    if isinstance(spec, dict) and "run" in spec:
        return _run_reward(spec, where, base_dir, score_run)
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
        raise ConfigError(f"{where}: a reward needs a `name` (a builtin, 'path/to/file.py:function' or 'module:func')")
    name, weight = spec["name"].strip(), spec.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
        raise ConfigError(f"{where}: weight must be a finite number, got {weight!r}")
    options = {k: v for k, v in spec.items() if k not in ("name", "weight")}
    if ":" in name:
        if options:
            raise ConfigError(
                f"{where}: options ({', '.join(options)}) are for builtin rewards; {name} takes none "
                f"(read them in the function, or from the records' fields)"
            )
        return Reward(
            name.rpartition(":")[2].split(".")[-1], float(weight), load_function(where, name, base_dir), where, name
        )
    if name not in BUILTIN_REWARDS:
        raise ConfigError(
            f"{where}: unknown reward {name!r}{closest(name, BUILTIN_REWARDS)}; builtins: "
            f"{', '.join(BUILTIN_REWARDS)}, or a function 'path/to/file.py:function' / 'module:function'"
        )
    factory, known = BUILTIN_REWARDS[name]
    for key in options:
        if key not in known:
            raise ConfigError(
                f"{where}: {name} has no option '{key}'{closest(key, known)}; its options: {', '.join(known)}"
            )
    return Reward(name, float(weight), factory(f"{where}", tokenize=tokenize, **options), where, name)


def _run_reward(spec: dict, where: str, base_dir: Path | None, score_run: Callable | None) -> Reward:
    from tuneforge.data.reward_runs import RunReward, check_reward_run

    extra = [k for k in spec if k not in ("run", "weight")]
    if extra:
        raise ConfigError(f"{where}: a run reward takes `run` and `weight` only, not {', '.join(extra)}")
    path, weight = spec["run"], spec.get("weight", 1.0)
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}: run: give the directory of a finished reward run")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
        raise ConfigError(f"{where}: weight must be a finite number, got {weight!r}")
    run_dir = check_reward_run(where, path.strip(), base_dir)
    return Reward(run_dir.name, float(weight), RunReward(run_dir, where, score_run), where, f"run:{path}")


class RewardScores(NamedTuple):
    """`total` [n] the weighted sum per completion; `per_reward` {name: [n]} each reward's own (unweighted) scores;
    `errors` {name: count} the scores that failed and were set to 0.0 (errors="zero"; 0 for every reward otherwise)."""

    total: list[float]
    per_reward: dict[str, list[float]]
    errors: dict[str, int]


def _excerpt(prompt: Any, limit: int = 40) -> str:
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[-1], dict):
        prompt = prompt[-1].get("content", "")
    text = " ".join(str(prompt).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, float) else str(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _checked(out: Any, n: int) -> tuple[list[float], list[tuple[int | None, str]]]:
    """Scores from a function's return value and the failures: (record index or None for all, what it returned)."""
    if hasattr(out, "tolist") and not isinstance(out, (str, bytes)):
        out = out.tolist()
    if not isinstance(out, (list, tuple)):
        return [0.0] * n, [(None, f"returned {_show(out)} instead of a list of {n} numbers")]
    if len(out) != n:
        return [0.0] * n, [(None, f"returned {len(out)} scores for {n} completions")]
    scores, failures = [], []
    for i, v in enumerate(out):
        if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # a numpy scalar or 0-d tensor
            v = v.item()
        ok = isinstance(v, numbers.Real) and math.isfinite(v)
        scores.append(float(v) if ok else 0.0)
        if not ok:
            failures.append((i, f"returned {_show(v)}"))
    return scores, failures


class RewardSet:
    """The rewards of `specs` (a list of specs, see the module docstring), built and checked at once: a bad spec is a
    ConfigError naming `key[i]`. `errors` is "raise" (a failing reward is a DataError) or "zero" (its score is 0.0,
    counted in the result's `errors`). `tokenize` (text -> token ids) serves `per: tokens`; `base_dir` the directory
    relative reward files are in (default: the current directory); `score_run` (a run directory -> a function of
    (prompts, completions)) loads the `run:` rewards on their first score."""

    def __init__(
        self,
        specs: Sequence[dict | str],
        errors: str = "raise",
        *,
        key: str = "task.rewards",
        tokenize: Callable[[str], Sequence] | None = None,
        base_dir: str | Path | None = None,
        score_run: Callable | None = None,
    ):
        if errors not in ERROR_MODES:
            raise ConfigError(f"reward errors must be raise or zero, got {errors!r}")
        if not specs:
            raise ConfigError(f"{key}: give at least one reward")
        self.errors = errors
        base = Path(base_dir) if base_dir is not None else None
        self.rewards: list[Reward] = []
        first_names: list[str] = []  # each reward's name before `_2`, `_3` ... are added
        for i, spec in enumerate(specs):
            r = load_reward(spec, f"{key}[{i}]", tokenize, base, score_run)
            seen = first_names.count(r.name)
            first_names.append(r.name)
            self.rewards.append(Reward(f"{r.name}_{seen + 1}", r.weight, r.func, r.where, r.spec_name) if seen else r)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def __call__(
        self, prompts: Sequence, completions: Sequence, fields: dict[str, Sequence] | None = None
    ) -> RewardScores:
        """Score `completions` [n] (with their `prompts` [n] and the records' other columns `fields`, each [n]) with
        every reward: the weighted total, each reward's scores and the failure counts (see the class)."""
        n = len(completions)
        fields = {k: list(v) for k, v in (fields or {}).items() if k not in ("prompts", "completions")}
        if len(prompts) != n or any(len(v) != n for v in fields.values()):
            lengths = {k: len(v) for k, v in fields.items()}
            raise ValueError(f"rewards: {n} completions but {len(prompts)} prompts and fields of lengths {lengths}")
        prompts, completions = list(prompts), list(completions)
        total, per_reward, counts = [0.0] * n, {}, {}
        for r in self.rewards:
            scores, failures = self._score(r, prompts, completions, fields)
            if failures and self.errors == "raise":
                index, what = failures[0]
                record = f"record {index} ({_excerpt(prompts[index])!r})" if index is not None else f"records 0-{n - 1}"
                raise DataError(f"reward '{r.name}' ({r.where}) failed on {record}: {what}")
            per_reward[r.name] = scores
            counts[r.name] = n if any(i is None for i, _ in failures) else len(failures)
            total = [t + r.weight * s for t, s in zip(total, scores)]
        return RewardScores(total, per_reward, counts)

    @staticmethod
    def _score(r: Reward, prompts: list, completions: list, fields: dict) -> tuple[list[float], list]:
        n = len(completions)
        try:
            return _checked(r.func(prompts=prompts, completions=completions, **fields), n)
        except TuneforgeError:
            raise
        except Exception as exc:
            batch_error = f"raised {first_line(exc, with_type=True)}"
        if n == 1:
            return [0.0], [(0, batch_error)]
        scores, failures = [], []
        for i in range(n):  # which records fail on their own
            one = {k: v[i : i + 1] for k, v in fields.items()}
            try:
                score, bad = _checked(r.func(prompts=prompts[i : i + 1], completions=completions[i : i + 1], **one), 1)
            except TuneforgeError:
                raise
            except Exception as exc:
                score, bad = [0.0], [(0, f"raised {first_line(exc, with_type=True)}")]
            scores += score
            failures += [(i, what) for _, what in bad]
        if not failures:  # only the whole batch fails
            return [0.0] * n, [(None, batch_error)]
        return scores, failures
