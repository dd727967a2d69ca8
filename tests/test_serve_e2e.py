"""e2e: the identity quickstart (SmolLM2-135M-Instruct + LoRA, the session's `identity_run`) behind `tuneforge
serve`, asked through the official openai client, streamed and not: sensible answers and the learned name."""

import os
import subprocess
import sys
import time

import pytest

from serve_common import free_port

pytestmark = pytest.mark.e2e
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def server(identity_run):
    """The real CLI in a subprocess, on a free loopback port, killed at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "serve", identity_run, "--port", str(port), "--api-key", "e2e"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    import httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    try:
        while True:
            assert proc.poll() is None, proc.stdout.read()[-2000:]
            try:
                if httpx.get(url + "/health", headers={"Authorization": "Bearer e2e"}, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "server did not come up"
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_client_gets_sensible_answers(server, identity_run):
    c = openai.OpenAI(base_url=server + "/v1", api_key="e2e", timeout=300, max_retries=0)
    model = c.models.list().data[0].id
    q = [{"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(model=model, messages=q, temperature=0, max_tokens=40)
    assert "Paris" in r.choices[0].message.content, r.choices[0].message.content
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(model=model, messages=q, temperature=0, max_tokens=40, stream=True)
        if ch.choices
    )
    assert streamed == r.choices[0].message.content
    # the identity run (conftest) is trained: it knows its new name
    who = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Who are you?"}], temperature=0, max_tokens=60
    )
    assert "Forge" in who.choices[0].message.content, who.choices[0].message.content
