"""The preference task end to end on the tiny Llama: a LoRA DPO run learns a consistent preference (held-out reward
accuracy), writes the run contract, its data report lists bad and cut pairs, the reference with the adapters off
equals the base model loaded on its own, a full fine-tune trains against a frozen copy, and its config is strict."""

import json

import pytest
import torch

from preference_common import pair_rows, pref_config
from sft_common import write_jsonl

from conftest import run_cli


def api_train(cfg, *overrides):
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    return train(load_config(raw=cfg, overrides=list(overrides)))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", pair_rows(40))


@pytest.fixture(scope="module")
def dpo_run(tiny_llama, pairs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "run"
    api_train(pref_config(tiny_llama, pairs_file, str(out)))
    return out


@pytest.mark.integration
def test_lora_dpo_learns_the_preference_and_writes_the_run(dpo_run):
    for name in ("config.yaml", "metrics.jsonl", "eval/metrics.json", "eval/report.md", "data/report.md"):
        assert (dpo_run / name).is_file(), name
    metrics = json.loads((dpo_run / "eval" / "metrics.json").read_text())
    test = metrics["test"]
    assert test["pairs"] == 8
    assert test["reward_accuracy"] >= 0.75 and test["reward_margin"] > 0, test
    logged = [json.loads(line) for line in (dpo_run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_reward_accuracy" in row for row in logged)
    report = (dpo_run / "eval" / "report.md").read_text()
    assert "reward_accuracy" in report and "| prompt | chosen answer | base model | tuned |" in report
    data = (dpo_run / "data" / "report.md").read_text()
    assert "## Preference pairs" in data and "| train | 24 | 0 |" in data


@pytest.mark.integration
def test_the_tuned_model_chats_and_merges(dpo_run, tmp_path):
    r = run_cli("chat", str(dpo_run), "--message", "Tell me about tea number 99.", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    r = run_cli("merge", str(dpo_run), "--out", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "merged" / "chat_template.jinja").is_file()


@pytest.mark.integration
def test_reference_with_adapters_off_equals_the_base_model(dpo_run, tiny_llama, pairs_file):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.config import load_config
    from tuneforge.methods import METHODS
    from tuneforge.tasks.base import TASKS
    from tuneforge.tasks.preference_loss import policy_logps

    cfg = load_config(raw=pref_config(tiny_llama, pairs_file, "unused"))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    task = TASKS.get("preference")(cfg)
    prepared = task.prepare(tok)
    batch = task.collator(tok)([prepared.train[i] for i in range(4)])
    from peft import PeftModel

    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), dpo_run / "model").eval()
    method = METHODS.get("lora")(cfg.method)
    with torch.no_grad():
        with method.disabled_adapters(tuned) as ref:
            off, _ = policy_logps(ref, batch)
        on, _ = policy_logps(tuned, batch)
        base, counts = policy_logps(AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), batch)
    assert torch.allclose(off, base, atol=1e-6, rtol=0)
    assert not torch.allclose(on, base, atol=1e-3)  # the adapters did change the model
    assert (counts > 0).all()


@pytest.mark.integration
def test_full_fine_tuning_trains_against_a_frozen_copy(tiny_llama, pairs_file, tmp_path):
    out = tmp_path / "full"
    cfg = pref_config(tiny_llama, pairs_file, str(out), method="full", loss="ipo")
    api_train(cfg, "train.epochs=1", "train.learning_rate=1e-3", "task.compare_base=false")
    test = json.loads((out / "eval" / "metrics.json").read_text())["test"]
    assert set(test) >= {"loss", "reward_accuracy", "reward_margin", "pairs"}


@pytest.mark.integration
@pytest.mark.parametrize("loss", ["orpo", "simpo"])
def test_reference_free_losses_train(tiny_llama, pairs_file, tmp_path, loss):
    out = tmp_path / loss
    api_train(pref_config(tiny_llama, pairs_file, str(out), loss=loss), "train.epochs=1", "task.report_prompts=0")
    assert json.loads((out / "eval" / "metrics.json").read_text())["test"]["pairs"] == 8


@pytest.mark.integration
def test_long_prompts_are_bad_records_and_cut_answers_are_counted(tiny_llama, tmp_path):
    rows = pair_rows(30)
    rows[4]["prompt"] = "word " * 200  # far over max_prompt_length=64
    rows[7]["chosen"] = "long answer " * 60  # cut at max_length
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = pref_config(tiny_llama, data, str(tmp_path / "error"))
    cfg["train"]["epochs"] = 1
    r = run_cli("train", _yaml(tmp_path, cfg))
    assert r.returncode == 3, r.stderr
    assert "record 5" in r.stderr and "data.max_prompt_length=64" in r.stderr and "bad_records" in r.stderr
    cfg["data"]["bad_records"] = "skip"
    cfg["output"]["dir"] = str(tmp_path / "skip")
    cfg["task"]["report_prompts"] = 0
    api_train(cfg)
    report = (tmp_path / "skip" / "data" / "report.md").read_text()
    assert "## Bad records left out (data.bad_records=skip)" in report and "| 5 |" in report
    saved = json.loads((tmp_path / "skip" / "data" / "report.json").read_text())
    assert sum(saved["pairs"][k]["truncated"] for k in saved["pairs"]) == 1


def _yaml(tmp_path, cfg) -> str:
    import yaml

    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


@pytest.mark.unit
@pytest.mark.parametrize(
    "task, data, message",
    [
        ({"gamma": 0.5}, {}, r"task\.gamma: read by loss simpo, not dpo"),
        (
            {"loss": "orpo", "beta": 0.2},
            {},
            r"task\.beta: read by losses dpo, ipo, robust, hinge, simpo, kto, not orpo",
        ),
        ({"loss": "ipo", "label_smoothing": 0.1}, {}, r"task\.label_smoothing: read by losses dpo, robust, simpo"),
        ({"loss": "orpo", "sft_weight": 0.5}, {}, r"orpo already adds the chosen answer's NLL"),
        ({}, {"max_prompt_length": 128}, r"max_prompt_length=128 leaves no room"),
        ({}, {"packing": True}, r"data\.packing: only used by the causal_lm task"),
        ({"desirable_weight": 2.0}, {}, r"task\.desirable_weight: read by loss kto, not dpo"),
        ({"loss": "kto", "sft_weight": 0.5}, {}, r"task\.sft_weight: not used by kto"),
    ],
)
def test_config_is_strict(tiny_llama, task, data, message):
    from tuneforge.config import load_config
    from tuneforge.errors import ConfigError

    raw = pref_config(tiny_llama, "x.jsonl", "out", **task)
    raw["data"].update(data)
    with pytest.raises(ConfigError, match=message):
        load_config(raw=raw)


@pytest.mark.unit
@pytest.mark.parametrize("init, switched_off", [("default", True), ("pissa", False), ("olora", False)])
def test_pissa_and_olora_have_no_adapters_off_base(tiny_llama, init, switched_off):
    """PiSSA / OLoRA cut the adapter's start out of the base weights: with it off the model is not the base, so the
    method says so (None) and the reference / base comparison loads the base instead."""
    from tuneforge.methods import METHODS

    lora = METHODS.get("lora")
    method = lora(lora.Config.model_validate({"name": "lora", "init": init}))

    class Wrapped(torch.nn.Module):
        def disable_adapter(self):
            import contextlib

            return contextlib.nullcontext()

    with method.disabled_adapters(Wrapped()) as base:
        assert (base is not None) is switched_off


@pytest.mark.unit
def test_a_finished_run_as_model_name(tmp_path):
    """`model.name: runs/<run>` continues from a run's whole model; an adapter-only run says to merge it first."""
    from tuneforge.errors import ModelError
    from tuneforge.models.loader import resolve_model

    full = tmp_path / "sft-full"
    (full / "model").mkdir(parents=True)
    (full / "model" / "tuneforge.json").write_text(json.dumps({"method": "full"}))
    (full / "model" / "config.json").write_text("{}")
    assert resolve_model(str(full)) == str(full / "model")
    lora = tmp_path / "sft-lora"
    (lora / "model").mkdir(parents=True)
    (lora / "model" / "tuneforge.json").write_text(json.dumps({"method": "lora"}))
    with pytest.raises(ModelError, match=r"is a lora run: its model/ holds the adapter only\. Merge it first"):
        resolve_model(str(lora))


@pytest.mark.unit
def test_the_estimate_counts_both_answers_of_a_pair(tiny_llama):
    """A batch of 4 pairs is a forward pass over 8 rows: the estimate's activations are those of an SFT batch of 8."""
    from tuneforge.config import load_config
    from tuneforge.training.estimate import estimate_memory

    pref = load_config(raw=pref_config(tiny_llama, "x.jsonl", "out"))
    sft_raw = pref_config(tiny_llama, "x.jsonl", "out")
    sft_raw["task"] = {"type": "causal_lm"}
    sft = load_config(raw=sft_raw)
    p = estimate_memory(pref, device="cpu", batch_size=4, seq_len=128)
    s8 = estimate_memory(sft, device="cpu", batch_size=8, seq_len=128)
    s4 = estimate_memory(sft, device="cpu", batch_size=4, seq_len=128)
    assert p.activations == s8.activations > s4.activations


@pytest.mark.integration
def test_kto_learns_from_pairs_read_as_good_and_bad_answers(tiny_llama, pairs_file, tmp_path):
    out = tmp_path / "kto"
    api_train(pref_config(tiny_llama, pairs_file, str(out), loss="kto"), "task.report_prompts=1")
    test = json.loads((out / "eval" / "metrics.json").read_text())["test"]
    assert test["answers"] == 16 and test["reward_accuracy"] >= 0.75 and test["reward_margin"] > 0, test
    assert "kl" in test
    data = (out / "data" / "report.md").read_text()
    assert "## Preference answers (unpaired, KTO)" in data and "| train | 48 | 0 |" in data


@pytest.mark.integration
def test_kto_reads_unpaired_answers_and_dpo_refuses_them(tiny_llama, tmp_path):
    from tuneforge.errors import DataError

    rows = [
        {"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
        for r in pair_rows(20)
        for side in ("chosen", "rejected")
    ]
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    out = tmp_path / "kto"
    api_train(pref_config(tiny_llama, data, str(out), loss="kto"), "train.epochs=1", "task.report_prompts=0")
    assert json.loads((out / "eval" / "metrics.json").read_text())["test"]["answers"] == 8
    with pytest.raises(DataError, match=r"holds unpaired records .* task\.loss dpo needs pairs"):
        api_train(pref_config(tiny_llama, data, str(tmp_path / "dpo")), "train.epochs=1")


@pytest.mark.unit
def test_kto_reward_accuracy_is_the_share_of_good_bad_answer_pairs_in_order():
    from types import SimpleNamespace

    from tuneforge.tasks.preference_loss import kto_metrics

    rewards = [0.9, 0.1, 0.5, 0.5, -1.0]
    good = [1, 1, 0, 1, 0]
    m = kto_metrics(SimpleNamespace(predictions=(rewards, good, [-1.0] * 5, [0.2] * 5)))
    # good {0.9, 0.1, 0.5} vs bad {0.5, -1.0}: 0.9 beats both, 0.1 beats one, 0.5 ties one and beats one -> 4.5 / 6
    assert m["reward_accuracy"] == pytest.approx(4.5 / 6)
    assert m["reward_margin"] == pytest.approx(0.5 - (-0.25)) and m["kl"] == pytest.approx(0.2)
