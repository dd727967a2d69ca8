from __future__ import annotations

import sys

import typer

from tuneforge.cli.app import app
from tuneforge.cli.precision import precision_option, use_precision


def sampling_options(temperature, top_p, max_new_tokens, repetition_penalty) -> dict:
    return {
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "repetition_penalty": repetition_penalty,
    }


@app.command()
def chat(
    targets: list[str] = typer.Argument(
        ...,
        metavar="TARGET...",
        help=(
            "A causal_lm run directory, a local model directory or a builtin alias; or several causal_lm runs of "
            "one base model (loaded on one shared base; --run or /run picks the one that answers)."
        ),
    ),
    run: str | None = typer.Option(
        None, "--run", help=("With several runs: the one that answers, by directory name (default: the first).")
    ),
    message: str | None = typer.Option(None, "--message", "-m", help="Answer this one message and exit."),
    system: str | None = typer.Option(
        None, "--system", help="System prompt (default: the one the run was trained with)."
    ),
    temperature: float | None = typer.Option(None, "--temperature", help="0 decodes greedily (default: the run's)."),
    top_p: float | None = typer.Option(None, "--top-p"),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens"),
    repetition_penalty: float | None = typer.Option(None, "--repetition-penalty"),
    template: str | None = typer.Option(
        None, "--template", help="Chat template for a base model without one (chatml, llama3, alpaca, vicuna)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for sampling."),
    precision: str = precision_option(),
):
    """Talk to a model: interactive with streamed answers (/reset clears the conversation, /exit quits,
    /run NAME switches to another of several runs, /run lists them), or one answer to --message on stdout."""
    use_precision(precision)
    import torch

    from tuneforge.errors import ConfigError
    from tuneforge.generation import generate, load_chat_model, stream
    from tuneforge.inference.adapters import load_chat_runs, run_names

    names = run_names(targets)
    if run is not None and run not in names:
        raise ConfigError(f"--run: no run named '{run}' (runs: {', '.join(names)})")
    if len(targets) == 1:
        models = {names[0]: (None, load_chat_model(targets[0], template=template))}
    else:
        models = {s.name: (s, cm) for s, cm in load_chat_runs(targets, template=template)}
    current = run or names[0]
    for _, cm in models.values():
        if system is not None:
            cm.system_prompt = system or None

    def use(name: str):
        served, cm = models[name]
        if served is not None:
            served.activate()  # this run's adapter on the shared base model
        return cm

    target = targets[0] if len(targets) == 1 else current
    settings = sampling_options(temperature, top_p, max_new_tokens, repetition_penalty)
    if seed is not None:
        torch.manual_seed(seed)
    if message is not None:
        print(generate(use(current), [[{"role": "user", "content": message}]], settings)[0]["response"])
        return
    switch = ", /run NAME switches run" if len(models) > 1 else ""
    print(f"chatting with {target} (/reset clears the conversation{switch}, /exit quits)", file=sys.stderr)
    history: list[dict] = []
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history = []
            print("(conversation cleared)", file=sys.stderr)
            continue
        if len(models) > 1 and (text == "/run" or text.startswith("/run ")):
            wanted = text[5:].strip()
            if wanted in models:
                current = wanted
                print(f"(now chatting with {current}; the conversation goes on)", file=sys.stderr)
            else:
                print(f"(runs: {', '.join(models)}; this is {current})", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        pieces = []
        for piece in stream(use(current), history, settings):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
