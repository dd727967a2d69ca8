"""Helpers for the serve tests: a real uvicorn server on a free loopback port, in a thread, stopped on exit."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, timeout: float = 30.0):
    """Serve `app` on 127.0.0.1:<free port>; yields the base URL; always stops the server."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + timeout
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def tiny_classifier_backend(model_dir: str, labels=("negative", "positive")):
    """A ClassifierBackend over an untrained local model directory (e.g. the tiny BERT fixture): the real
    tokenizer and forward pass, without a training run."""
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification

    from tuneforge.inference import LoadedRun
    from tuneforge.models.loader import load_tokenizer
    from tuneforge.serve.backends import ClassifierBackend

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels)).eval()
    meta = {"task": "classification", "labels": list(labels), "max_length": 64}
    return ClassifierBackend(
        LoadedRun(model=model, tokenizer=load_tokenizer(model_dir), meta=meta, model_dir=Path(model_dir)), "tiny-cls"
    )


def random_chat_backend(path):
    """A ChatBackend over an untrained tiny Llama whose answers run to max_tokens: with tied embeddings it echoes
    its last input token ("\\n") forever, so an untied random head and banned special tokens give visible text
    that only max_tokens or a stop string can end."""
    import torch

    from sft_common import make_tiny_llama
    from tuneforge.serve.backends import load_backend

    backend = load_backend(make_tiny_llama(path, seed=1), device="cpu")
    model = backend.cm.model
    torch.manual_seed(0)
    model.lm_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    model.generation_config.suppress_tokens = list(range(4))  # the tokenizer's 4 special tokens
    return backend


def chunks(total: int, size: int = 64 * 1024, pause_s: float = 0.0):
    """A request body of `total` bytes as a generator (httpx sends it with Transfer-Encoding: chunked)."""
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        if pause_s:
            time.sleep(pause_s)
        yield b"x" * n
