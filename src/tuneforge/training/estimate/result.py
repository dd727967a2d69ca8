"""The estimate's result: per-device bytes of each part at the peak of a training step, as a table or a dict."""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 2**30


def gib(b: int) -> str:
    """Bytes as a short size: '3.2 GiB', or '512.0 MiB' under a tenth of a GiB."""
    return f"{b / GIB:.1f} GiB" if abs(b) >= GIB // 10 else f"{b / 2**20:.1f} MiB"


@dataclass
class Estimate:
    """Per-device bytes at the peak of a training step."""

    weights: int
    trainable_weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    total: int
    trainable_params: int
    total_params: int
    nproc: int
    strategy: str
    assumptions: list[str] = field(default_factory=list)
    #: a task that generates inside each step (GRPO): the KV cache and logits of generation, held instead of
    #: activations + logits (not beside them) at its own peak
    generation: int = 0

    def table(self) -> str:
        """An aligned text table in GiB with a header."""
        rows = [
            ("weights", self.weights),
            ("  of which trainable", self.trainable_weights),
            ("gradients", self.gradients),
            ("optimizer states", self.optimizer),
            ("activations", self.activations),
            ("logits / loss", self.logits),
            ("overhead", self.overhead),
        ]
        if self.generation:
            rows.insert(6, ("generation (KV cache)", self.generation))
        where = f"per device, {self.nproc} x {self.strategy}" if self.nproc > 1 else "one device"
        head = f"estimated peak memory ({where})"
        width = max(len(r[0]) for r in rows) + 2
        lines = [head, f"{'component':<{width}}{'GiB':>9}", "-" * (width + 9)]
        lines += [f"{name:<{width}}{b / GIB:>9.2f}" for name, b in rows]
        lines += [
            "-" * (width + 9),
            f"{'total':<{width}}{self.total / GIB:>9.2f}",
            f"parameters: {self.trainable_params:,} trainable of {self.total_params:,}",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "weights",
                "trainable_weights",
                "gradients",
                "optimizer",
                "activations",
                "logits",
                "overhead",
                "generation",
                "total",
                "trainable_params",
                "total_params",
                "nproc",
                "strategy",
                "assumptions",
            )
        }
