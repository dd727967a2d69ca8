"""A finished reward run (`task.type: reward`) as one of GRPO's rewards: `{run: runs/rm, weight: 1.0}` in
`task.rewards`. Its spec is checked here without loading anything (the directory holds a finished run, and that run
is a reward model); the model is loaded on the first score, through the `score_run` function the caller gives
(the training engine gives `tuneforge.inference.run_scorer`: loading a run belongs to a layer above the data).

The reward run scores each completion as the answer to its prompt the way it was trained (its own chat template,
system prompt and length limits: docs/preference.md, "Using a finished run"): it works on texts, so its base model
and tokenizer need not be the policy's. A prompt over the reward run's data.max_prompt_length is a failure of that
record, handled by `task.reward_errors` like any reward's failure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from tuneforge.errors import ConfigError, TuneforgeError, first_line

#: (prompts, completions) -> one float per completion
Scorer = Callable[[list, list], Sequence[float]]


def check_reward_run(where: str, path: str, base_dir: Path | None = None) -> Path:
    """The run directory of a `run:` reward spec; ConfigError (one line naming `where`) when it is missing, has no
    trained model, or is not a reward run."""
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if not p.exists():
        raise ConfigError(f"{where}: no run at {path} (run: names a finished reward run's directory)")
    meta = next((m for m in (p / "model" / "tuneforge.json", p / "tuneforge.json") if m.is_file()), None)
    if meta is None:
        raise ConfigError(f"{where}: {path} holds no trained model (no model/tuneforge.json): is the run finished?")
    try:
        task = json.loads(meta.read_text()).get("task")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: {meta} cannot be read: {first_line(exc)}") from None
    if task != "reward":
        raise ConfigError(
            f"{where}: {path} is a {task} run, not a reward model (train one with task.type: reward, "
            f"docs/preference.md)"
        )
    return p if (p / "model").is_dir() else p.parent


class RunReward:
    """The reward function of a reward run: called as every reward is (prompts, completions, fields), it loads the
    run through `score_run` on its first call and returns the run's score of each completion."""

    def __init__(self, run_dir: Path, where: str, score_run: Callable[[str], Scorer] | None):
        self.run_dir = run_dir
        self.where = where
        self.score_run = score_run
        self._scorer: Scorer | None = None

    def __call__(self, prompts: list, completions: list, **fields) -> list[float]:
        if self._scorer is None:
            if self.score_run is None:
                raise ConfigError(f"{self.where}: a reward run is scored inside a training run only (no loader given)")
            self._scorer = self.score_run(str(self.run_dir))
        try:
            return list(self._scorer(list(prompts), [str(c) for c in completions]))
        except TuneforgeError as exc:  # a prompt over the run's limit: a failure of the record, not of the run
            raise ValueError(str(exc)) from None
