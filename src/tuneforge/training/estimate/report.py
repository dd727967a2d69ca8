"""An estimate held against a device (`tuneforge estimate CONFIG --gpu NAME | --memory SIZE`, `tuneforge.estimate`):
the estimate, whether it fits, and the cheapest changes that make it fit, as one dict the CLI prints and the API
returns."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tuneforge.errors import ConfigError
from tuneforge.training.estimate.advice import suggestions
from tuneforge.training.estimate.budget import fits_line, gpu_memory, parse_memory
from tuneforge.training.estimate.core import estimate_memory
from tuneforge.training.estimate.result import Estimate


@dataclass
class FitReport:
    estimate: Estimate
    budget: int | None = None  # bytes per device; None: no device named
    label: str | None = None  # the GPU's name or the size as given
    suggestions: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.estimate.total <= self.budget

    def to_dict(self) -> dict:
        return {**self.estimate.to_dict(), "budget": self.budget, "fits": self.fits, "suggestions": self.suggestions}

    def lines(self) -> list[str]:
        """What `tuneforge estimate` prints: the table, the assumptions, and against a budget the verdict and the
        suggestions."""
        out = [self.estimate.table(), "assumptions: " + "; ".join(self.estimate.assumptions)]
        if self.budget:
            out.append(fits_line(self.estimate, self.budget, self.label))
            if not self.fits:
                out.append(
                    "suggestions (config overrides or launch options):"
                    if self.suggestions
                    else "no change found that saves memory; try a larger GPU"
                )
                out += [f"  {t}" for t in self.suggestions]
        return out


def fit_report(
    config: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    gpu: str | None = None,
    memory: str | None = None,
    nproc: int = 1,
    strategy: str = "ddp",
) -> FitReport:
    """The peak memory per device of training `config` (with `key=value` overrides) spread over `nproc` devices
    with `strategy`, held against a catalogued `gpu` or a `memory` size when one is given. Raises ConfigError for
    both or for an unknown GPU or size."""
    from tuneforge.config import load_config
    from tuneforge.training.gpus import find_gpu

    if gpu and memory:
        raise ConfigError("--gpu and --memory: give one of them")
    bf16, budget, label = True, None, None
    if gpu:
        entry = find_gpu(gpu)
        bf16, budget, label = entry.bf16, gpu_memory(gpu), entry.name
    elif memory:
        budget, label = parse_memory(memory), memory
    cfg = load_config(config, list(overrides), environment=False)
    est = estimate_memory(cfg, nproc=nproc, strategy=strategy, device="cuda", bf16=bf16)
    tips = (
        suggestions(cfg, est, budget, nproc, strategy, bf16=bf16, best_effort=True)
        if budget and est.total > budget
        else []
    )
    return FitReport(est, budget, label, tips)
