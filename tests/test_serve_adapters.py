"""Several runs on one base model (`tuneforge serve RUN_A RUN_B`, `predict`/`chat --run`): LoRA runs of one tiny
base share it, each request is answered by the adapter it names (identical to that run loaded alone), classifier
runs with different label counts share one base, a full run loads beside them on its own model, and runs of
different base models or task types are refused in one line naming both. Tiny random models trained in-process
for a few steps."""

from __future__ import annotations

import concurrent.futures as cf
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_sentiment_rows, tiny_config

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_common import running_server  # noqa: E402
from sft_common import chat_rows, make_tiny_llama, write_jsonl  # noqa: E402

pytestmark = pytest.mark.integration

TEXTS = ["good great film", "bad boring plot", "the acting was superb and moving", "dull and tedious"]


def _train(raw: dict) -> str:
    import tuneforge
    from tuneforge.config.validation import validate_config

    return str(tuneforge.train(validate_config(raw)).run_dir)


@pytest.fixture(scope="module")
def cls_runs(tiny_bert, tmp_path_factory) -> dict:
    """alpha: 2 labels, beta: 3 labels (both LoRA on tiny_bert), full: full fine-tuning of tiny_bert,
    other: LoRA on another base model."""
    import torch
    from transformers import BertModel

    root = tmp_path_factory.mktemp("adapters-cls")
    two = root / "two.csv"
    pd.DataFrame(make_sentiment_rows(48)).to_csv(two, index=False)
    rows = make_sentiment_rows(48, seed=1, labels=("neg", "pos"))
    for i, r in enumerate(rows):
        if i % 3 == 0:
            r["label"] = "meh"
    three = root / "three.csv"
    pd.DataFrame(rows).to_csv(three, index=False)
    other_base = root / "other-bert"
    torch.manual_seed(1)
    model = BertModel.from_pretrained(tiny_bert)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(other_base)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(other_base)

    out = {}
    for name, base, data, method in [
        ("alpha", tiny_bert, two, "lora"),
        ("beta", tiny_bert, three, "lora"),
        ("full", tiny_bert, two, "full"),
        ("other", str(other_base), two, "lora"),
    ]:
        raw = tiny_config(base, str(data), str(root / name), method=method)
        raw["train"].update({"epochs": 1})
        out[name] = _train(raw)
    return out


@pytest.fixture(scope="module")
def chat_runs(tmp_path_factory) -> dict:
    """Two LoRA SFT runs of one tiny Llama (trained on different answers)."""
    root = tmp_path_factory.mktemp("adapters-chat")
    base = make_tiny_llama(root / "base")
    rows = chat_rows(30)
    out = {}
    for name, answer_rows in [("sky", [r for r in rows if "sky" in json.dumps(r)] * 6), ("paris", rows)]:
        data = write_jsonl(root / f"{name}.jsonl", answer_rows)
        raw = {
            "model": {"name": base},
            "data": {"train": data, "max_length": 64, "split": {"validation": 0.2, "test": 0.0}},
            "task": {"type": "causal_lm", "report_prompts": 0, "generation": {"temperature": 0.0, "max_new_tokens": 6}},
            "method": {"name": "lora"},
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "learning_rate": 2e-2,
                "logging_steps": 5,
                "report_to": "none",
                "seed": 3 if name == "sky" else 4,
            },
            "output": {"dir": str(root / name)},
        }
        out[name] = _train(raw)
    return out


def _alone(path):
    from tuneforge.inference import load_run

    return load_run(path, device="cpu")


def _close(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-5), k


def test_runs_with_different_label_counts_share_one_base(cls_runs):
    from tuneforge.inference import predict
    from tuneforge.inference.adapters import load_runs

    notes = []
    runs = load_runs([cls_runs["alpha"], cls_runs["beta"], cls_runs["full"]], device="cpu", note=notes.append)
    alpha, beta, full = runs
    assert [r.name for r in runs] == ["alpha", "beta", "full"]
    assert alpha.run.model is beta.run.model and alpha.shared and beta.shared
    assert full.run.model is not alpha.run.model and not full.shared
    assert len(notes) == 1 and "full" in notes[0] and "own model" in notes[0]
    expected = {r.name: predict(_alone(r.path), TEXTS) for r in runs}
    assert set(expected["beta"][0]["probabilities"]) == {"neg", "pos", "meh"}
    for _ in range(2):  # interleaved: each switch puts the right adapter (and head) back
        for r in (beta, alpha, full, alpha, beta):
            r.activate()
            for got, exp in zip(predict(r.run, TEXTS), expected[r.name]):
                assert got["label"] == exp["label"]
                _close(got["probabilities"], exp["probabilities"])


def test_serve_classifiers_by_model_field(cls_runs):
    from tuneforge.inference import predict
    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import load_backends

    backends = load_backends([cls_runs["alpha"], cls_runs["beta"]], device="cpu")
    expected = {name: {p["text"]: p for p in predict(_alone(cls_runs[name]), TEXTS)} for name in ("alpha", "beta")}
    with running_server(create_app(backends)) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["alpha", "beta"]
        health = c.get("/health").json()
        assert health["models"] == ["alpha", "beta"] and health["model"] == "alpha"
        default = c.post("/v1/classify", json={"texts": TEXTS}).json()
        assert default["model"] == "alpha" and default["labels"] == ["negative", "positive"]
        r = c.post("/v1/classify", json={"text": TEXTS[0], "model": "beta"})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "beta" and r.json()["labels"] == ["meh", "neg", "pos"]
        missing = c.post("/v1/classify", json={"text": "good", "model": "gamma"})
        assert missing.status_code == 404
        err = missing.json()["error"]
        assert err["code"] == "model_not_found" and "alpha, beta" in err["message"]

        # many clients at once, alternating runs: batches never mix runs, each answer is its run's own
        jobs = [(name, t) for t in TEXTS for name in ("alpha", "beta")] * 4
        with cf.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda j: c.post("/v1/classify", json={"text": j[1], "model": j[0]}), jobs))
        for (name, text), a in zip(jobs, answers):
            assert a.status_code == 200, a.text
            body = a.json()
            assert body["model"] == name
            got, exp = body["results"][0], expected[name][text]
            assert got["label"] == exp["label"]
            _close(got["probabilities"], exp["probabilities"])


def test_chat_completions_pick_the_adapter(chat_runs, capsys):
    from tuneforge.generation import generate, load_chat_model
    from tuneforge.serve.app import create_app
    from tuneforge.serve.backends import load_backends

    msgs = [{"role": "user", "content": "colour of the sky"}]
    settings = {"temperature": 0, "max_new_tokens": 6}
    expected = {
        name: generate(load_chat_model(path, device="cpu"), [msgs], settings)[0]["response"]
        for name, path in chat_runs.items()
    }
    backends = load_backends([chat_runs["sky"], chat_runs["paris"]], device="cpu")
    assert backends[0].cm.model is backends[1].cm.model
    with running_server(create_app(backends)) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["sky", "paris"]

        def ask(model=None):
            body = {"messages": msgs, "temperature": 0, "max_tokens": 6, **({"model": model} if model else {})}
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            return r.json()

        for name in ("paris", "sky", "paris"):
            r = ask(name)
            assert r["model"] == name and r["choices"][0]["message"]["content"] == expected[name]
        assert ask()["model"] == "sky"
        bad = c.post("/v1/chat/completions", json={"messages": msgs, "model": "gpt-4o"})
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "model_not_found"
    # the two adapters answer differently (else the test above could not tell them apart)
    logits = {}
    import torch

    from tuneforge.generation import prompt_ids

    for b in backends:
        b.activate()
        with torch.no_grad():
            logits[b.name] = b.cm.model(input_ids=torch.tensor([prompt_ids(b.cm, msgs)])).logits[0, -1]
    assert not torch.allclose(logits["sky"], logits["paris"])

    # `tuneforge chat RUN_A RUN_B --run NAME`
    from tuneforge.cli.app import main

    capsys.readouterr()
    for name in ("paris", "sky"):
        assert (
            main(
                [
                    "chat",
                    chat_runs["sky"],
                    chat_runs["paris"],
                    "--run",
                    name,
                    "-m",
                    msgs[0]["content"],
                    "--temperature",
                    "0",
                    "--max-new-tokens",
                    "6",
                ]
            )
            == 0
        )
        assert capsys.readouterr().out.strip() == expected[name].strip()


def test_runs_that_cannot_share_are_refused_in_one_line(cls_runs, chat_runs, capsys):
    from tuneforge.cli.app import main
    from tuneforge.errors import ModelError
    from tuneforge.inference.adapters import load_runs

    with pytest.raises(ModelError, match="base model") as exc:
        load_runs([cls_runs["alpha"], cls_runs["other"]], device="cpu")
    assert cls_runs["alpha"] in str(exc.value) and cls_runs["other"] in str(exc.value)
    with pytest.raises(ModelError, match="task type") as exc:
        load_runs([cls_runs["alpha"], chat_runs["sky"]], device="cpu")
    assert "'classification'" in str(exc.value) and "'causal_lm'" in str(exc.value)
    # the CLI: one line, exit code 4, before any model loads or the port is bound
    capsys.readouterr()
    assert main(["serve", cls_runs["alpha"], chat_runs["sky"], "--port", "0"]) == 4
    err = capsys.readouterr().err.strip()
    # a line over 300 characters names a deep directory by its last two parts (cli.app.error_line)
    tails = ["/".join(Path(p).parts[-2:]) for p in (cls_runs["alpha"], chat_runs["sky"])]
    assert len(err.splitlines()) == 1 and all(t in err for t in tails), err


def test_predict_cli_with_several_runs(cls_runs, capsys):
    from tuneforge.cli.app import main
    from tuneforge.inference import predict

    alpha, beta = cls_runs["alpha"], cls_runs["beta"]
    expected = {name: predict(_alone(cls_runs[name]), TEXTS[:2]) for name in ("alpha", "beta")}
    capsys.readouterr()
    assert main(["predict", alpha, beta, *TEXTS[:2], "--run", "beta"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == TEXTS[:2]
    for got, exp in zip(lines, expected["beta"]):
        assert got["label"] == exp["label"]
        _close(got["probabilities"], exp["probabilities"])

    assert main(["predict", alpha, beta, *TEXTS[:2]]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == TEXTS[:2]
    for i, line in enumerate(lines):
        assert set(line["runs"]) == {"alpha", "beta"}
        for name in ("alpha", "beta"):
            assert line["runs"][name]["label"] == expected[name][i]["label"]

    assert main(["predict", alpha, beta, "good", "--run", "gamma"]) == 2
    assert "no run named 'gamma'" in capsys.readouterr().err
