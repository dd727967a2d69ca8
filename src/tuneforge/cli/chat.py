from __future__ import annotations

import sys
from typing import Optional

import typer

from tuneforge.cli.app import app


def sampling_options(temperature, top_p, max_new_tokens, repetition_penalty) -> dict:
    return {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
            "repetition_penalty": repetition_penalty}


@app.command()
def chat(target: str = typer.Argument(..., help="A causal_lm run directory, a local model directory or a builtin alias."),
         message: Optional[str] = typer.Option(None, "--message", "-m", help="Answer this one message and exit."),
         system: Optional[str] = typer.Option(None, "--system", help="System prompt (default: the one the run was trained with)."),
         temperature: Optional[float] = typer.Option(None, "--temperature", help="0 decodes greedily (default: the run's)."),
         top_p: Optional[float] = typer.Option(None, "--top-p"),
         max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
         repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty"),
         template: Optional[str] = typer.Option(None, "--template", help="Chat template for a base model without one (chatml, llama3, alpaca, vicuna)."),
         seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling.")):
    """Talk to a model: interactive with streamed answers (/reset clears the conversation, /exit quits),
    or one answer to --message on stdout."""
    import torch

    from tuneforge.generation import generate, load_chat_model, stream

    cm = load_chat_model(target, template=template)
    if system is not None:
        cm.system_prompt = system or None
    settings = sampling_options(temperature, top_p, max_new_tokens, repetition_penalty)
    if seed is not None:
        torch.manual_seed(seed)
    if message is not None:
        print(generate(cm, [[{"role": "user", "content": message}]], settings)[0]["response"])
        return
    print(f"chatting with {target} (/reset clears the conversation, /exit quits)", file=sys.stderr)
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
        history.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        pieces = []
        for piece in stream(cm, history, settings):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
