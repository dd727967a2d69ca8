"""e2e: the identity quickstart (SmolLM2-135M-Instruct + LoRA) behind `tuneforge serve`, asked through the
official openai client, streamed and not. CI trains it for a few steps (the answer must still be sensible);
set TUNEFORGE_IDENTITY_RUN to a fully trained run to also check the learned name."""

import os
import subprocess
import sys
import time

import pytest

from serve_common import free_port

from conftest import REPO, run_cli

pytestmark = pytest.mark.e2e
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def identity_run(tmp_path_factory):
    given = os.environ.get("TUNEFORGE_IDENTITY_RUN")
    if given:
        return given, True
    try:
        from tuneforge.models.loader import resolve_model

        resolve_model("builtin:smollm2-135m-instruct")
    except Exception as exc:
        pytest.skip(f"builtin SmolLM2 not available: {exc}")
    out = tmp_path_factory.mktemp("identity") / "run"
    proc = run_cli(
        "train",
        str(REPO / "configs/quickstart/identity-smollm2-lora.yaml"),
        f"output.dir={out}",
        "train.max_steps=2",
        "task.report_prompts=0",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(out), False


@pytest.fixture(scope="module")
def server(identity_run):
    """The real CLI in a subprocess, on a free loopback port, killed at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "serve", identity_run[0], "--port", str(port), "--api-key", "e2e"],
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
    if identity_run[1]:  # a fully trained identity run knows its new name
        who = (
            c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Who are you?"}], temperature=0, max_tokens=60
            )
            .choices[0]
            .message.content
        )
        assert "Forge" in who, who
