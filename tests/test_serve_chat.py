"""`tuneforge serve` for a causal LM, driven by the official `openai` client: chat completions streamed and
not, usage counts, stop strings, /v1/models, auth, and 4xx JSON errors. A tiny Llama SFT run on loopback."""

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from serve_common import running_server  # noqa: E402
from sft_common import make_tiny_llama, train_tiny_sft_run  # noqa: E402


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    return train_tiny_sft_run(tmp_path_factory.mktemp("serve-sft"), rows=40, epochs=3, max_new_tokens=12)


@pytest.fixture(scope="module")
def server(sft_run):
    from tuneforge.serve.app import ServeLimits, create_app
    from tuneforge.serve.backends import load_backend

    backend = load_backend(sft_run, device="cpu")
    with running_server(create_app(backend, api_key="k1", limits=ServeLimits(max_input_chars=200))) as url:
        yield url, backend


def client(url, key="k1"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, timeout=60, max_retries=0)


@pytest.mark.integration
def test_openai_client_chat_plain_and_streamed(server):
    url, backend = server
    c = client(url)
    models = c.models.list()
    assert [m.id for m in models.data] == [backend.name]
    msgs = [{"role": "user", "content": "who are you"}]
    r = c.chat.completions.create(model=backend.name, messages=msgs, temperature=0, max_tokens=12)
    answer = r.choices[0].message.content
    # the same answer the chat command gives (greedy), so the saved template and stop tokens are used
    from tuneforge.generation import generate

    expected = generate(backend.cm, [msgs], {"temperature": 0, "max_new_tokens": 12})[0]
    assert answer == expected["response"] and answer
    assert r.choices[0].finish_reason == expected["finish_reason"]
    assert r.usage.completion_tokens == expected["tokens"] and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    stream = c.chat.completions.create(
        model=backend.name,
        messages=msgs,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            pieces.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert "".join(pieces) == answer and finish == expected["finish_reason"]
    assert usage.completion_tokens == expected["tokens"]


@pytest.fixture(scope="module")
def random_llama_server(tmp_path_factory):
    """An untrained tiny Llama rarely emits its stop token, so max_tokens and stop strings decide the end."""
    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import load_backend

    backend = load_backend(make_tiny_llama(tmp_path_factory.mktemp("random-llama"), seed=1), device="cpu")
    # untrained with tied embeddings it echoes its last input token ("\n") forever; an untied random head and
    # banned special tokens give visible text that only max_tokens or a stop string can end
    import torch

    model = backend.cm.model
    torch.manual_seed(0)
    model.lm_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    model.generation_config.suppress_tokens = list(range(4))  # the tokenizer's 4 special tokens
    with running_server(create_app(backend)) as url:
        yield url


@pytest.mark.unit
def test_sampling_settings_and_stop_strings(random_llama_server):
    c = client(random_llama_server, key="none")
    msgs = [{"role": "user", "content": "what is the capital of france"}]
    r = c.chat.completions.create(model="x", messages=msgs, temperature=0, max_tokens=16)
    full, n = r.choices[0].message.content, r.usage.completion_tokens
    assert n == 16 and r.choices[0].finish_reason == "length", r
    short = c.chat.completions.create(model="x", messages=msgs, temperature=0, max_tokens=5)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    assert full.startswith(short.choices[0].message.content)
    sampled = c.chat.completions.create(model="x", messages=msgs, temperature=1.0, top_p=0.9, max_tokens=6, seed=3)
    assert sampled.usage.completion_tokens <= 6
    # a stop string from the middle of the greedy answer: the answer ends before it, streamed or not
    mid = len(full) // 2
    stop = next(full[i : i + 2] for i in range(mid, len(full) - 1) if full[i : i + 2].strip() == full[i : i + 2])
    cut = c.chat.completions.create(model="x", messages=msgs, temperature=0, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)].strip()
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(
            model="x", messages=msgs, temperature=0, max_tokens=16, stop=stop, stream=True
        )
        if ch.choices
    )
    assert streamed == cut.choices[0].message.content


@pytest.mark.integration
def test_chat_errors_are_4xx_json(server):
    url, _ = server
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    h = {"Authorization": "Bearer k1"}
    with httpx.Client(base_url=url, timeout=30, headers=h) as c:
        cases = [
            (
                c.post("/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}),
                400,
                "malformed JSON",
            ),
            (c.post("/v1/chat/completions", json={"model": "x"}), 400, "messages: field required"),
            (c.post("/v1/chat/completions", json={"messages": []}), 400, "messages"),
            (c.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "hi"}]}), 400, "role"),
            (
                c.post(
                    "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "temperature": 5}
                ),
                400,
                "temperature",
            ),
            (c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "n": 3}), 400, "n"),
            (
                c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 201}]}),
                413,
                "limit is 200",
            ),
            (
                c.post(
                    "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}
                ),
                400,
                "context",
            ),
            (
                c.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "hi"}]}),
                400,
                "last message",
            ),
        ]
        for r, status, needle in cases:
            assert r.status_code == status, (r.status_code, r.text)
            assert needle in r.json()["error"]["message"] and "Traceback" not in r.text
        with pytest.raises(openai.BadRequestError):
            client(url).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], top_p=0)
