"""`tuneforge serve` for a classifier: /v1/classify (one or many texts, batched under concurrency), /health,
API-key auth, and 4xx JSON errors for bad requests. A real uvicorn server on loopback, on a tiny trained run."""

import concurrent.futures as cf

import pytest

from conftest import run_cli

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_common import running_server  # noqa: E402


@pytest.fixture(scope="module")
def backend(tiny_cls_run):
    from tuneforge.serve.backends import load_backend

    return load_backend(tiny_cls_run, device="cpu")


@pytest.mark.integration
def test_classify_one_and_many_match_predict(backend, tiny_cls_run):
    from tuneforge.inference import predict
    from tuneforge.serve.app import create_app

    texts = ["good great film", "bad boring plot", "the acting was superb and moving"]
    expected = predict(backend.run, texts)
    with running_server(create_app(backend)) as url, httpx.Client(base_url=url, timeout=30) as c:
        r = c.get("/health")
        assert r.status_code == 200 and r.json()["task"] == "classification"
        one = c.post("/v1/classify", json={"text": texts[0]})
        assert one.status_code == 200, one.text
        assert one.json()["results"][0]["label"] == expected[0]["label"]
        many = c.post("/v1/classify", json={"texts": texts}).json()
        assert [r["label"] for r in many["results"]] == [e["label"] for e in expected]
        for got, exp in zip(many["results"], expected):
            assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
            for k, v in exp["probabilities"].items():
                assert got["probabilities"][k] == pytest.approx(v, abs=1e-4)


@pytest.mark.integration
def test_concurrent_requests_are_batched_without_errors(backend):
    from tuneforge.serve.app import create_app

    app = create_app(backend)
    texts = [f"the film was {w}" for w in ("good", "bad", "great", "awful", "dull", "fun")] * 10
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        with cf.ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(lambda t: c.post("/v1/classify", json={"text": t}), texts))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
        ref = c.post("/v1/classify", json={"texts": texts}).json()["results"]
        assert [r.json()["results"][0]["label"] for r in responses] == [x["label"] for x in ref]
        batches = c.get("/health").json()["batches"]
    # requests that arrived together shared forward passes
    assert batches < len(texts)


@pytest.mark.integration
def test_bad_requests_get_4xx_json(backend):
    from tuneforge.serve.app import ServeLimits, create_app

    app = create_app(backend, limits=ServeLimits(max_input_chars=50, max_texts=3))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        cases = [
            (
                c.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"}),
                400,
                "malformed JSON",
            ),
            (c.post("/v1/classify", json={}), 400, "exactly one of"),
            (c.post("/v1/classify", json={"texts": "not a list"}), 400, "texts"),
            (c.post("/v1/classify", json={"texts": []}), 400, "empty"),
            (c.post("/v1/classify", json={"text": "x" * 51}), 413, "limit is 50"),
            (c.post("/v1/classify", json={"texts": ["a", "b", "c", "d"]}), 413, "limit is 3"),
            (c.post("/v1/classify", json={"text": "a", "bogus": 1}), 400, "bogus"),
            (c.get("/v1/nothing-here"), 404, "Not Found"),
            (c.get("/v1/classify"), 405, "Method Not Allowed"),
        ]
        for r, status, needle in cases:
            assert r.status_code == status, (r.status_code, r.text)
            err = r.json()["error"]
            assert needle in err["message"] and "Traceback" not in r.text


@pytest.mark.integration
def test_api_key_is_required_on_every_request(backend):
    from tuneforge.serve.app import create_app

    with running_server(create_app(backend, api_key="s3cret")) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/health").status_code == 401
        r = c.post("/v1/classify", json={"text": "good"}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "invalid API key"
        r = c.post("/v1/classify", json={"text": "good"})
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
        ok = c.post("/v1/classify", json={"text": "good"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


@pytest.mark.integration
def test_cli_refuses_public_bind_without_key_and_bad_targets(tiny_cls_run, tmp_path):
    proc = run_cli("serve", tiny_cls_run, "--host", "0.0.0.0", timeout=120)
    assert proc.returncode != 0 and "refusing to bind 0.0.0.0 without an API key" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("serve", str(tmp_path / "missing"), timeout=120)
    assert proc.returncode != 0 and "not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.unit
def test_bind_rules():
    from tuneforge.errors import ConfigError
    from tuneforge.serve.backends import check_bind, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")
    check_bind("0.0.0.0", "key", False)
    check_bind("0.0.0.0", None, True)
    with pytest.raises(ConfigError):
        check_bind("10.0.0.1", None, False)
