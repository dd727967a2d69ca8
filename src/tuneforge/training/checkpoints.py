"""Which Trainer checkpoints count: a checkpoint is `checkpoint-<step>` and is used (for --resume, or kept by
rotation) only once complete, so a kill during a save never leaves a half-written one to continue from."""

from __future__ import annotations

import json
from pathlib import Path

CHECKPOINT_MARKER = "tuneforge-complete.json"
WEIGHT_FILES = (
    "model.safetensors",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "adapter_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def checkpoint_step(path: Path) -> int | None:
    """The step of a `checkpoint-<step>` directory name; None for any other name."""
    name = path.name
    if not name.startswith("checkpoint-") or not name[len("checkpoint-") :].isdigit():
        return None
    return int(name[len("checkpoint-") :])


def checkpoint_is_complete(path: Path) -> bool:
    """A checkpoint is complete when tuneforge marked it after the Trainer finished writing it, or (checkpoints
    written before the marker existed, or a kill between the Trainer's last write and the marker) when it
    holds weights and a readable trainer_state.json for its step: transformers writes that file last and
    writes every file in place (no staging directory), so a half-written checkpoint lacks it or has it cut."""
    step = checkpoint_step(path)
    if step is None or not path.is_dir():
        return False
    if (path / CHECKPOINT_MARKER).is_file():
        return True
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return state.get("global_step") == step and any((path / w).is_file() for w in WEIGHT_FILES)
