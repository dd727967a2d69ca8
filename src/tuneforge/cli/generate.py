from __future__ import annotations

import json
from pathlib import Path

import typer

from tuneforge.cli.app import app
from tuneforge.cli.precision import precision_option, use_precision
from tuneforge.errors import DataError


def read_prompts(path: str) -> list[tuple[dict, list[dict]]]:
    """(original record, messages) per line of a .jsonl (prompt / messages / instruction+input) or .txt file.

    Raises DataError naming the line of a record that has none of those fields."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"file not found: {path}")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if p.suffix == ".txt":
            out.append(({"prompt": line}, [{"role": "user", "content": line}]))
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {n} is not JSON ({exc.msg})") from None
        if isinstance(rec, str):
            rec = {"prompt": rec}
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {n} must be an object with 'prompt', 'messages' or 'instruction'")
        if isinstance(rec.get("messages"), list) and rec["messages"]:
            msgs = rec["messages"]
            if not all(isinstance(m, dict) and "role" in m and isinstance(m.get("content"), str) for m in msgs):
                raise DataError(f"{path}: line {n}: every message needs 'role' and text 'content'")
            msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
        elif isinstance(rec.get("prompt"), str):
            msgs = [{"role": "user", "content": rec["prompt"]}]
        elif isinstance(rec.get("instruction"), str):
            extra = rec.get("input") or ""
            msgs = [{"role": "user", "content": rec["instruction"] + ("\n" + extra if extra.strip() else "")}]
        else:
            raise DataError(f"{path}: line {n} has no 'prompt', 'messages' or 'instruction' field")
        out.append((rec, msgs))
    if not out:
        raise DataError(f"{path}: no prompts")
    return out


@app.command()
def generate(
    target: str = typer.Argument(..., help="A causal_lm run directory, a local model directory or a builtin alias."),
    file: str = typer.Option(
        ..., "--file", "-f", help="Prompts: .jsonl (prompt / messages / instruction+input per line) or .txt."
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Write JSON lines here instead of stdout."),
    temperature: float | None = typer.Option(None, "--temperature", help="0 decodes greedily (default: the run's)."),
    top_p: float | None = typer.Option(None, "--top-p"),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens"),
    repetition_penalty: float | None = typer.Option(None, "--repetition-penalty"),
    batch_size: int = typer.Option(8, "--batch-size"),
    template: str | None = typer.Option(None, "--template", help="Chat template for a base model without one."),
    seed: int | None = typer.Option(None, "--seed"),
    precision: str = precision_option(),
):
    """Answer every prompt of a file; one JSON line per prompt: the record plus response and finish_reason."""
    use_precision(precision)
    from tuneforge.cli.chat import sampling_options
    from tuneforge.generation import generate as run_generate
    from tuneforge.generation import load_chat_model

    items = read_prompts(file)
    cm = load_chat_model(target, template=template)
    results = run_generate(
        cm,
        [m for _, m in items],
        sampling_options(temperature, top_p, max_new_tokens, repetition_penalty),
        batch_size=batch_size,
        seed=seed,
    )
    lines = [json.dumps({**rec, **res}, ensure_ascii=False) for (rec, _), res in zip(items, results)]
    if out:
        Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        print("\n".join(lines))
