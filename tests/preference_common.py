"""Preference pairs for the tests: a consistent preference a tiny model can learn in a few steps."""

LIKED, DISLIKED = "Certainly, here it is.", "No. Go away."


def pair_rows(n: int) -> list[dict]:
    """`n` pairs in TRL's prompt/chosen/rejected form: the same polite answer is always preferred."""
    topics = ["tea", "rain", "maps", "bread", "clocks", "rivers", "stars", "salt"]
    return [
        {"prompt": f"Tell me about {topics[i % len(topics)]} number {i}.", "chosen": LIKED, "rejected": DISLIKED}
        for i in range(n)
    ]


def pref_config(model: str, data: str, out: str, method: str = "lora", **task) -> dict:
    """A raw config for a fast preference run on the tiny Llama (`task` adds task keys)."""
    return {
        "model": {"name": model},
        "data": {"train": data, "max_length": 128, "split": {"validation": 0.2, "test": 0.2}},
        "task": {"type": "preference", "report_prompts": 2, "report_max_new_tokens": 6, **task},
        "method": {"name": method},
        "train": {"epochs": 3, "batch_size": 4, "learning_rate": 1e-2, "logging_steps": 2, "report_to": "none"},
        "output": {"dir": out},
    }
