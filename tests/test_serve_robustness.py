"""`tuneforge serve` under hostile and heavy use: every bad request (malformed JSON, wrong types, lone
surrogates, huge or chunked bodies, a wrong key, unknown routes) is a 4xx JSON error and never a 5xx; 20
concurrent clients with an oversized upload in flight all get answers; 20 concurrent streamed chats where some
clients hang up mid-stream leave the others complete; a busy port is a one-line error. Real uvicorn servers on
127.0.0.1, untrained tiny models (no training run), in-process."""

import concurrent.futures as cf
import json
import logging
import socket

import pytest

from conftest import run_cli

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_common import chunks, random_chat_backend, running_server, tiny_classifier_backend  # noqa: E402

pytestmark = pytest.mark.unit

KEY = {"Authorization": "Bearer k"}
JSON = {"content-type": "application/json", **KEY}


@pytest.fixture(scope="module")
def cls_backend(tiny_bert):
    return tiny_classifier_backend(tiny_bert)


@pytest.fixture(scope="module")
def chat_backend(tmp_path_factory):
    return random_chat_backend(tmp_path_factory.mktemp("robust-llama"))


@pytest.fixture
def server_errors(caplog):
    """Records of requests that failed inside the server (our 500 handler, uvicorn's 'Exception in ASGI
    application'): a test asserts there are none."""
    uv = logging.getLogger("uvicorn")  # does not propagate to the root logger caplog listens on
    uv.addHandler(caplog.handler)
    caplog.set_level(logging.ERROR)
    try:
        yield lambda: [
            f"{r.name}: {r.getMessage()}"
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith(("tuneforge", "uvicorn"))
        ]
    finally:
        uv.removeHandler(caplog.handler)


def check_4xx(cases):
    """cases: (label, response, expected status or None for any 4xx, text expected in the message or None)."""
    for label, r, status, needle in cases:
        assert 400 <= r.status_code < 500, (label, r.status_code, r.text[:300])
        assert status is None or r.status_code == status, (label, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/json"), (label, r.headers)
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"] and "Traceback" not in r.text, label
        assert needle is None or needle in err["message"], (label, err["message"])


def surrogate_json(template: str) -> bytes:
    """A JSON body spelling a lone surrogate as the escape \\ud800 (what JavaScript's JSON.stringify and
    Python's json.dumps write for a broken string): valid JSON, invalid Unicode."""
    return template.replace("@", "\\ud800").encode("ascii")


def test_classify_bad_inputs_are_4xx_json(cls_backend, server_errors):
    from tuneforge.serve.app import create_app

    big = 6 * 1024 * 1024  # over the default 4 MB limit
    with (
        running_server(create_app(cls_backend, api_key="k")) as url,
        httpx.Client(base_url=url, timeout=60, headers=KEY) as c,
    ):
        post = lambda body, **kw: c.post("/v1/classify", content=body, headers={**JSON, **kw})  # noqa: E731
        cases = [
            ("malformed", post(b'{"texts": ['), 400, "malformed JSON"),
            ("empty body", post(b""), 400, None),
            ("not utf-8", post(b'{"text": "\xff\xfe bad"}'), 400, None),
            ("utf-8-encoded surrogate", post('{"text": "\ud800"}'.encode("utf-8", "surrogatepass")), 400, None),
            ("deep nesting", post(b"[" * 100_000 + b"]" * 100_000), 400, None),
            ("list body", post(b'["good"]'), 400, None),
            ("null body", post(b"null"), 400, None),
            ("number body", post(b"42"), 400, None),
            ("texts of ints", c.post("/v1/classify", json={"texts": [1, 2]}), 400, "texts"),
            ("text is a list", c.post("/v1/classify", json={"text": ["good"]}), 400, "text"),
            ("texts of null", c.post("/v1/classify", json={"texts": [None]}), 400, "texts"),
            ("texts is a dict", c.post("/v1/classify", json={"texts": {"a": "b"}}), 400, "texts"),
            ("text is a number", c.post("/v1/classify", json={"text": 5}), 400, "text"),
            ("wrong key", c.post("/v1/classify", json={"txt": "good film"}), 400, "txt"),
            ("surrogate in texts", post(surrogate_json('{"texts": ["@ good"]}')), 400, "surrogate"),
            ("surrogate in text", post(surrogate_json('{"text": "good @"}')), 400, "surrogate"),
            ("low surrogate", post(b'{"texts": ["ok", "\\udfff"]}'), 400, "texts.1"),
            ("surrogate in a key", post(surrogate_json('{"@": 1, "text": "good"}')), 400, "Unicode"),
            ("surrogate in model", post(surrogate_json('{"text": "good", "model": "@"}')), 400, "surrogate"),
            (
                "text/plain",
                c.post("/v1/classify", content=b'{"text": "good"}', headers={"content-type": "text/plain"}),
                400,
                None,
            ),
            ("huge, with length", post(b"x" * (5 * 1024 * 1024)), 413, "limit"),
            ("huge, chunked", post(chunks(big)), 413, "limit"),
            (
                "wrong API key",
                c.post("/v1/classify", json={"text": "good"}, headers={"Authorization": "Bearer x"}),
                401,
                "invalid API key",
            ),
            ("no API key", httpx.post(url + "/v1/classify", json={"text": "good"}), 401, "Bearer"),
            ("unknown route", c.get("/v1/nothing-here"), 404, None),
            ("root", c.get("/"), 404, None),
            ("chat route on a classifier", c.post("/v1/chat/completions", json={"messages": []}), 404, None),
            ("encoded surrogate in path", c.get("/v1/%ED%A0%80"), 404, None),
            ("long path", c.get("/" + "a" * 4000), 404, None),
            ("wrong method", c.get("/v1/classify"), 405, None),
            ("delete", c.delete("/v1/classify"), 405, None),
        ]
        check_4xx(cases)
        # a chunked body under the limit is read and answered like any other
        ok = c.post("/v1/classify", content=iter([b'{"texts": ["good ', b'film", "dull plot"]}']), headers=JSON)
        assert ok.status_code == 200 and len(ok.json()["results"]) == 2, ok.text
        assert c.get("/health").status_code == 200
    assert server_errors() == []


def test_chat_bad_inputs_are_4xx_json(chat_backend, server_errors):
    from tuneforge.serve.app import create_app

    with (
        running_server(create_app(chat_backend, api_key="k")) as url,
        httpx.Client(base_url=url, timeout=60, headers=KEY) as c,
    ):
        post = lambda body: c.post("/v1/chat/completions", content=body, headers=JSON)  # noqa: E731
        msg = lambda content: {"messages": [{"role": "user", "content": content}]}  # noqa: E731
        cases = [
            ("malformed", post(b'{"messages": [{"role": '), 400, "malformed JSON"),
            (
                "surrogate in content",
                post(surrogate_json('{"messages": [{"role": "user", "content": "@ hi"}]}')),
                400,
                "surrogate",
            ),
            (
                "surrogate in a part",
                post(surrogate_json('{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi @"}]}]}')),
                400,
                "surrogate",
            ),
            (
                "surrogate in stop",
                post(surrogate_json('{"messages": [{"role": "user", "content": "hi"}], "stop": ["@"]}')),
                400,
                "surrogate",
            ),
            (
                "surrogate streamed",
                post(surrogate_json('{"messages": [{"role": "user", "content": "@"}], "stream": true}')),
                400,
                "surrogate",
            ),
            ("messages is a string", c.post("/v1/chat/completions", json={"messages": "hi"}), 400, "messages"),
            ("content is a number", c.post("/v1/chat/completions", json=msg(5)), 400, "content"),
            ("content is null", c.post("/v1/chat/completions", json=msg(None)), 400, "content"),
            ("part without text", c.post("/v1/chat/completions", json=msg([{"type": "image_url"}])), 400, None),
            ("stream is a word", c.post("/v1/chat/completions", json={**msg("hi"), "stream": "often"}), 400, "stream"),
            (
                "max_tokens negative",
                c.post("/v1/chat/completions", json={**msg("hi"), "max_tokens": -1}),
                400,
                "max_tokens",
            ),
            (
                "wrong key",
                c.post("/v1/chat/completions", json={"mesages": [{"role": "user", "content": "hi"}]}),
                400,
                "messages",
            ),
            ("huge, chunked", post(chunks(6 * 1024 * 1024)), 413, "limit"),
            (
                "wrong API key",
                c.post("/v1/chat/completions", json=msg("hi"), headers={"Authorization": "Bearer x"}),
                401,
                None,
            ),
            ("classify route on a chat model", c.post("/v1/classify", json={"text": "hi"}), 404, None),
            ("models, wrong method", c.post("/v1/models"), 405, None),
        ]
        check_4xx(cases)
        ok = c.post("/v1/chat/completions", json={**msg("hello"), "max_tokens": 3})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3, ok.text
    assert server_errors() == []


def test_20_concurrent_classify_clients_with_an_oversized_upload_in_flight(cls_backend, server_errors):
    from tuneforge.serve.app import ServeLimits, create_app

    limit = 1_000_000
    app = create_app(cls_backend, limits=ServeLimits(max_body_bytes=limit))
    words = ("good", "bad", "great", "awful", "dull", "fun")

    def client(i: int) -> list[int]:
        with httpx.Client(base_url=url, timeout=60) as c:
            return [
                c.post("/v1/classify", json={"texts": [f"the film was {words[(i + k) % 6]}"] * (1 + k % 3)}).status_code
                for k in range(10)
            ]

    def oversized() -> int:
        # 2 MB sent slowly in 32 KB chunks, so it is still uploading while the other clients are answered
        with httpx.Client(base_url=url, timeout=60) as c:
            return c.post(
                "/v1/classify",
                content=chunks(2 * limit, 32 * 1024, pause_s=0.01),
                headers={"content-type": "application/json"},
            ).status_code

    with running_server(app) as url:
        with cf.ThreadPoolExecutor(21) as pool:
            big = pool.submit(oversized)
            statuses = [s for f in [pool.submit(client, i) for i in range(20)] for s in f.result(timeout=120)]
            big_status = big.result(timeout=120)
        assert statuses == [200] * 200, [s for s in statuses if s != 200]  # 20 clients x 10 requests
        assert big_status == 413
        assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
    assert server_errors() == []


def read_stream(url: str, i: int, hang_up: bool) -> dict:
    """One streamed chat; with hang_up, the client closes the connection after the first content chunk."""
    body = {
        "messages": [{"role": "user", "content": f"tell me about number {i}"}],
        "stream": True,
        "max_tokens": 24,
        "temperature": 0,
    }
    out = {"content": "", "finish": None, "done": False, "errors": []}
    with httpx.Client(base_url=url, timeout=120) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        out["status"] = r.status_code
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                out["done"] = True
                break
            event = json.loads(data)
            if "error" in event:
                out["errors"].append(event["error"])
                continue
            for ch in event["choices"]:
                out["content"] += ch["delta"].get("content") or ""
                out["finish"] = ch["finish_reason"] or out["finish"]
            if hang_up and out["content"]:
                break  # leaving the block closes the connection mid-stream
    return out


def test_20_concurrent_streams_some_clients_hang_up(chat_backend, server_errors):
    from tuneforge.serve.app import create_app

    hang_ups = {i for i in range(20) if i % 4 == 1}
    with running_server(create_app(chat_backend)) as url:
        with cf.ThreadPoolExecutor(20) as pool:
            futures = {i: pool.submit(read_stream, url, i, i in hang_ups) for i in range(20)}
            results = {i: f.result(timeout=120) for i, f in futures.items()}
        for i, r in results.items():
            assert r["status"] == 200 and r["errors"] == [], (i, r)
            if i in hang_ups:
                continue
            assert r["done"] and r["finish"] == "length" and r["content"], (i, r)
        # the model worker is free again: a plain request after the storm is answered
        after = httpx.post(
            url + "/v1/chat/completions",
            timeout=60,
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] == 2
    assert server_errors() == []


def test_cancelled_generation_stops_early(chat_backend):
    import threading

    cancel = threading.Event()
    msgs = [{"role": "user", "content": "hi"}]
    full = chat_backend.complete(msgs, {"temperature": 0, "max_new_tokens": 20}, [], cancel=cancel)
    assert full.completion_tokens == 20
    cancel.set()
    cut = chat_backend.complete(msgs, {"temperature": 0, "max_new_tokens": 20}, [], cancel=cancel)
    assert cut.completion_tokens <= 1 and full.text.startswith(cut.text)


def test_busy_port_is_one_line(tmp_path):
    from tuneforge.errors import ServeError
    from tuneforge.serve.app import bind_listener

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is already in use"):
            bind_listener("127.0.0.1", port)
        # the CLI: one line, exit code 6, before any model is loaded (tmp_path is not even a run)
        proc = run_cli("serve", str(tmp_path), "--port", str(port), timeout=120)
    assert proc.returncode == ServeError.exit_code == 6, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: port {port} on 127.0.0.1 is already in use"), lines
    free = bind_listener("127.0.0.1", 0)
    try:
        assert free.getsockname()[1] > 0
    finally:
        free.close()
