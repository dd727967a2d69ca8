"""The data report of an SFT run: records, languages and characters per split, turns and the share of trained
tokens, duplicate conversations inside train and copies of held-out ones (reported, never removed), and what
`data.overflow` did; in the shape `data.report.write_report` renders."""

from __future__ import annotations


def _record_text(record) -> str:
    if isinstance(record, str):
        return record
    return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in record)


def sft_data_report(fmt: str, splits: dict[str, list | None], stats: dict, overflow: str, max_length: int) -> dict:
    """What the SFT data looks like, in the shape `data.report.write_report` renders: records, language mix
    and characters per split, turns and trained-token share, exact duplicate conversations inside train and
    training conversations that copy a held-out one (reported, never removed), and what `data.overflow` did."""
    from collections import Counter

    from tuneforge.data.text import count_han, detect_language, normalize

    def summary(records):
        if not records:
            return None
        texts = [_record_text(r) for r in records]
        chars = [len(t) for t in texts]
        user = [
            " ".join(m["content"] for m in r if m.get("role") == "user") if isinstance(r, list) else r for r in records
        ]
        return {
            "rows": len(records),
            "classes": {},
            "languages": dict(Counter(detect_language(t) for t in user).most_common()),
            "chars": {"mean": round(sum(chars) / len(chars), 1), "max": max(chars)},
        }

    report: dict = {"task": "causal_lm", "format": fmt, "steps": []}
    for name, key in (("train", "before"), ("validation", "validation"), ("test", "test")):
        report[key] = summary(splits.get(name))
    conversations = {}
    for name, records in splits.items():
        if not records:
            continue
        turns = [sum(m.get("role") == "assistant" for m in r) if isinstance(r, list) else 1 for r in records]
        tokens, trained = stats.get(f"{name}_tokens", 0), stats.get(f"{name}_trained_tokens", 0)
        han = sum(count_han(_record_text(r)) for r in records)
        conversations[name] = {
            "records": len(records),
            "assistant_turns_mean": round(sum(turns) / len(turns), 2),
            "trained_token_share": round(trained / tokens, 4) if tokens else None,
            "truncated": stats.get(f"{name}_truncated", 0),
            "dropped": stats.get(f"{name}_dropped", 0),
            "split": stats.get(f"{name}_split", 0),
            "no_target_left": stats.get(f"{name}_no_target_left", 0),
            # Chinese text: how many Han characters, and how many tokens each costs this tokenizer
            "chinese_characters": han,
            "tokens_per_chinese_character": round(tokens / han, 3) if han and tokens else None,
        }
    report["conversations"] = conversations
    train = splits.get("train") or []
    kept = stats.get(
        "train_examples", len(train) - stats.get("train_dropped", 0) - stats.get("train_no_target_left", 0)
    )
    report["after"] = {**(report["before"] or {}), "rows": kept}
    report["steps"].append(
        {
            "step": f"overflow:{overflow}",
            "rows_before": len(train),
            "rows_after": kept,
            "max_length": max_length,
            "truncated": stats.get("train_truncated", 0),
            "split": stats.get("train_split", 0),
        }
    )
    keys = [normalize(_record_text(r)) for r in train]
    groups = [g for g in Counter(keys).values() if g > 1]
    held = {normalize(_record_text(r)): name for name in ("validation", "test") for r in (splits.get(name) or [])}
    cross = [(i, held[k]) for i, k in enumerate(keys) if k in held]
    report["duplicates"] = {
        "train_duplicate_groups": len(groups),
        "train_duplicate_rows": sum(g - 1 for g in groups),
        "conflicting_groups": 0,
        "cross_split_train_rows": len(cross),
        "removed": 0,
        "cross": [
            {
                "train": _record_text(train[i]),
                "split": split,
                "kind": "exact",
                "similarity": 1.0,
                "other": _record_text(train[i]),
            }
            for i, split in cross[:20]
        ],
    }
    return report
