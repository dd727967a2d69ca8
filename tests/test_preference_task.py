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
def test_eval_of_a_finished_run_gives_its_final_test_metrics(dpo_run, tmp_path):
    """`tuneforge eval RUN` (its saved test split; the reference = adapters off) repeats the numbers the run's final
    evaluation wrote; another pair file is read in any preference format."""
    r = run_cli("eval", str(dpo_run), "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    want = json.loads((dpo_run / "eval" / "metrics.json").read_text())["test"]
    for key in ("loss", "reward_accuracy", "reward_margin", "logps_chosen", "logps_rejected"):
        assert got[key] == pytest.approx(want[key], abs=1e-5), key
    assert (tmp_path / "again" / "report.md").is_file()
    rows = [{"instruction": "Tell me about tea.", "input": "", "chosen": "Certainly, here it is.", "rejected": "No."}]
    r = run_cli("eval", str(dpo_run), "--data", str(write_jsonl(tmp_path / "alpaca.jsonl", rows)))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pairs"] == 1


@pytest.mark.integration
def test_full_fine_tuning_trains_against_a_frozen_copy(tiny_llama, pairs_file, tmp_path):
    out = tmp_path / "full"
    cfg = pref_config(tiny_llama, pairs_file, str(out), method="full", loss="ipo")
    api_train(cfg, "train.epochs=1", "train.learning_rate=1e-3", "task.compare_base=false")
    test = json.loads((out / "eval" / "metrics.json").read_text())["test"]
    assert set(test) >= {"loss", "reward_accuracy", "reward_margin", "pairs"}


def _losses(run) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.integration
@pytest.mark.parametrize("method, live", [("full", "copy"), ("lora", "adapters")])
def test_precomputed_reference_trains_like_the_live_one(tiny_llama, pairs_file, tmp_path, method, live):
    """The reference log-probs computed once before training give the per-step losses and held-out metrics of the
    reference computed at every step (a frozen copy, or the adapters switched off); only they leave a cache."""
    runs = {}
    for ref in (live, "precompute"):
        runs[ref] = tmp_path / ref
        cfg = pref_config(tiny_llama, pairs_file, str(runs[ref]), method=method, reference=ref)
        api_train(cfg, "train.epochs=1", "train.learning_rate=1e-3", "task.report_prompts=0")
    assert _losses(runs["precompute"]) == pytest.approx(_losses(runs[live]), abs=1e-5)
    got, want = (json.loads((runs[r] / "eval" / "metrics.json").read_text())["test"] for r in ("precompute", live))
    assert got["reward_accuracy"] == want["reward_accuracy"]
    assert got["reward_margin"] == pytest.approx(want["reward_margin"], abs=1e-5)
    assert (runs["precompute"] / "reference" / "logps.npz").is_file()
    assert not (runs[live] / "reference").exists()
    key = json.loads((runs["precompute"] / "reference" / "key.json").read_text())
    assert key["pairs"] == {"train": 24, "validation": 8, "test": 8}


@pytest.mark.integration
def test_reference_model_is_another_run_and_must_share_the_tokenizer(
    tiny_llama, tiny_wordpiece_llama, pairs_file, tmp_path, capfd
):
    from tuneforge.errors import ConfigError

    sft = tmp_path / "first"  # a finished full run stands in for an SFT run
    api_train(pref_config(tiny_llama, pairs_file, str(sft), method="full"), "train.epochs=1", "task.report_prompts=0")
    out = tmp_path / "second"
    cfg = pref_config(tiny_llama, pairs_file, str(out), reference_model=str(sft))
    api_train(cfg, "train.epochs=1", "task.report_prompts=0")
    assert json.loads((out / "reference" / "key.json").read_text())["reference"] == str(sft)
    assert f"reference log-probs: computing for 40 pairs with {sft}" in capfd.readouterr().err
    cfg = pref_config(tiny_llama, pairs_file, str(tmp_path / "third"), reference_model=tiny_wordpiece_llama)
    with pytest.raises(ConfigError, match=r"the reference must share the policy's tokenizer"):
        api_train(cfg, "train.epochs=1", "task.report_prompts=0")


@pytest.mark.integration
def test_adapters_reference_needs_a_method_with_adapters(tiny_llama, pairs_file, tmp_path):
    from tuneforge.errors import ConfigError

    cfg = pref_config(tiny_llama, pairs_file, str(tmp_path / "run"), method="full", reference="adapters")
    with pytest.raises(ConfigError, match=r"task\.reference: adapters: method 'full' has no adapters to switch off"):
        api_train(cfg, "train.epochs=1", "task.report_prompts=0")


@pytest.mark.integration
def test_compare_puts_losses_side_by_side(tiny_llama, pairs_file, tmp_path):
    import yaml

    from tuneforge.compare import compare
    from tuneforge.errors import ConfigError

    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump(pref_config(tiny_llama, pairs_file, "unused")))
    over = ["eval.metric=reward_accuracy", "task.report_prompts=0", "train.epochs=1"]
    res = compare(
        str(cfg),
        "lora",
        max_steps=2,
        out=tmp_path / "cmp",
        overrides=over,
        isolate=False,
        echo=lambda s: None,
        vary="task.loss=dpo,orpo",
    )
    assert sorted(p.name for p in (tmp_path / "cmp").glob("lora-*-seed*")) == ["lora-dpo-seed42", "lora-orpo-seed42"]
    data = res.report.data
    assert data["metric"] == "reward_accuracy"
    assert [g["label"] for g in data["groups"]] == ["lora task.loss=dpo", "lora task.loss=orpo"]
    assert all(g["state"] == "completed" for g in data["groups"])
    assert "Comparison of task.loss" in (tmp_path / "cmp" / "report.md").read_text()
    with pytest.raises(ConfigError, match=r"--vary: methods are compared with --methods"):
        compare(str(cfg), "lora", out=tmp_path / "x", vary="method.name=lora,full", echo=lambda s: None)
    with pytest.raises(ConfigError, match=r"--vary: 'task.loss' is not KEY=V1,V2"):
        compare(str(cfg), "lora", out=tmp_path / "x", vary="task.loss", echo=lambda s: None)


@pytest.mark.integration
def test_search_tunes_beta_on_held_out_reward_accuracy(tiny_llama, pairs_file, tmp_path):
    import yaml

    from tuneforge.search import make_plan, search

    cfg, space = tmp_path / "dpo.yaml", tmp_path / "space.yaml"
    raw = pref_config(tiny_llama, pairs_file, "unused")
    raw["eval"] = {"metric": "reward_accuracy"}
    raw["task"]["report_prompts"] = 0
    cfg.write_text(yaml.safe_dump(raw))
    space.write_text(yaml.safe_dump({"task.beta": {"float": [0.05, 0.5], "log": True}}))
    plan = make_plan(str(cfg), str(space), ["train.max_steps=3"], trials=2, study_dir=str(tmp_path / "study"))
    result = search(plan, echo=lambda s: None)
    rows = (tmp_path / "study" / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and "task.beta" in rows[0]
    best = json.loads((tmp_path / "study" / "test.json").read_text())  # the best trial on its test split, once
    assert best["metric"] == "reward_accuracy" and 0.0 <= best["metrics"]["reward_accuracy"] <= 1.0
    assert best["metrics"]["pairs"] == 8 and result is not None


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
        ({"loss": "orpo", "reference": "copy"}, {}, r"task\.reference: read by losses dpo, ipo, robust, hinge, kto"),
        ({"loss": "simpo", "reference_model": "m"}, {}, r"task\.reference_model: read by losses dpo, ipo"),
        ({"loss": "kto", "reference": "precompute"}, {}, r"kto's KL term pairs each prompt with another row's"),
        ({"reference": "adapters", "reference_model": "m"}, {}, r"adapters uses the run's own base model"),
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
def test_compare_varying_the_loss_drops_the_keys_the_new_loss_does_not_read(tiny_llama, tmp_path, capsys):
    """`compare --vary task.loss=...` from a DPO config: orpo loses beta (it reads none), simpo gets its own default
    beta (2.0, another scale), kto keeps DPO's beta and drops label_smoothing; every run's config is valid."""
    import yaml

    from tuneforge.compare.plan import plan

    raw = pref_config(tiny_llama, "x.jsonl", "out", beta=0.2, label_smoothing=0.1)
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    runs = plan(str(cfg), ["lora"], None, None, tmp_path / "cmp", vary=("task.loss", ["dpo", "orpo", "simpo", "kto"]))
    tasks = {r.raw["task"]["loss"]: r.raw["task"] for r in runs}
    assert [r.error for r in runs] == [None] * 4
    assert (tasks["dpo"]["beta"], tasks["dpo"]["label_smoothing"]) == (0.2, 0.1)
    assert "beta" not in tasks["orpo"] and "label_smoothing" not in tasks["orpo"]
    assert "beta" not in tasks["simpo"] and tasks["simpo"]["label_smoothing"] == 0.1
    assert tasks["kto"]["beta"] == 0.2 and "label_smoothing" not in tasks["kto"]
    err = capsys.readouterr().err
    assert "task.loss=simpo: task.beta dropped: simpo uses its own default (2.0)" in err
    assert "task.loss=kto: task.label_smoothing dropped: read by dpo, robust, simpo, not kto" in err


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


@pytest.mark.unit
def test_the_estimate_counts_a_frozen_reference_copy_only_where_there_is_one(tiny_llama):
    from tuneforge.config import load_config
    from tuneforge.training.estimate import estimate_memory

    def weights(method, **task):
        e = estimate_memory(
            load_config(raw=pref_config(tiny_llama, "x.jsonl", "out", method=method, **task)), device="cpu"
        )
        return e.weights, e.assumptions

    full, notes = weights("full")  # auto: precomputed log-probs, no copy
    copy, copy_notes = weights("full", reference="copy")
    assert copy == 2 * full and not any("reference copy" in n for n in notes)
    assert any("a frozen reference copy of" in n for n in copy_notes)
    lora, _ = weights("lora")  # auto: the adapters switched off
    lora_copy, _ = weights("lora", reference="copy")
    assert lora < lora_copy < 2 * lora
    assert weights("full", loss="kto")[0] == copy  # kto cannot precompute: a copy
    assert weights("full", loss="orpo")[0] == full  # no reference at all


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


@pytest.mark.integration
def test_the_web_ui_trains_lists_and_chats_with_a_preference_run(dpo_run, tiny_llama, pairs_file):
    """The web UI's pages for preference runs: the Train form offers the task with every loss and its parameters
    (a form round trip gives a valid config), the Runs page lists the run with its main metric and draws the reward
    accuracy curve, and the Chat page offers it."""
    pytest.importorskip("gradio")
    from tuneforge.config import load_config
    from tuneforge.webui.fields import fields_for, task_types
    from tuneforge.webui.form import form_to_raw, form_values
    from tuneforge.webui.model_pages import chat_targets
    from tuneforge.webui.runs_page import curves
    from tuneforge.webui.workspace import Workspace

    assert {"preference", "reward", "grpo"} <= set(task_types())
    specs = {s.key: s for s in fields_for("preference", "lora")}
    for key in ("task.loss", "task.beta", "task.gamma", "task.orpo_alpha", "task.reference", "data.max_prompt_length"):
        assert key in specs, key
    assert set(specs["task.loss"].choices) >= {"dpo", "ipo", "orpo", "simpo", "kto"}
    raw = pref_config(tiny_llama, pairs_file, "out", loss="simpo", gamma=0.3)
    task, method, values = form_values(raw)
    assert (task, method, values["task.loss"], values["task.gamma"]) == ("preference", "lora", "simpo", 0.3)
    cfg = load_config(raw=form_to_raw(task, method, values, raw))
    assert (cfg.task.loss, cfg.task.gamma, cfg.task.beta) == ("simpo", 0.3, None)

    ws = Workspace(dpo_run.parent, [dpo_run.parent], cwd=dpo_run.parent)
    row = next(r for r in ws.runs() if r["name"] == dpo_run.name)
    assert (row["state"], row["metric"], row["interface"]) == ("completed", "loss", "chat")  # the default metric
    assert row["value"] is not None and row["value"] > 0
    losses, others = curves(ws, dpo_run, "loss")
    assert "eval_reward_accuracy" in set(others["series"]) and "loss" in set(losses["series"])
    assert dpo_run.name in chat_targets(ws)


@pytest.mark.integration
@pytest.mark.parametrize("reference", ["adapters", "precompute"])
def test_a_bf16_run_evaluates_in_fp32(tiny_llama, pairs_file, tmp_path, reference):
    """Training in bf16 autocast, the held-out rewards are computed in fp32 (Task.evaluate_in_fp32): the run's own
    final metrics equal `tuneforge eval` of the finished run (which loads it in fp32) on the same pairs, for the live
    reference (adapters off) and for precomputed held-out reference log-probs."""
    from tuneforge.config.environment import cpu_bf16

    if not cpu_bf16():
        pytest.skip("this CPU has no bf16 units: train.precision bf16 is refused")
    out = tmp_path / "run"
    # beta 5: rewards are beta x log-ratios, so bf16's rounding of the log-probs shows (at 0.1 it is below 1e-4 on
    # this 32-wide model)
    raw = pref_config(tiny_llama, pairs_file, str(out), reference=reference, beta=5.0)
    raw["train"].update({"precision": "bf16", "epochs": 1})
    raw["task"]["report_prompts"] = 0
    api_train(raw)
    own = json.loads((out / "eval" / "metrics.json").read_text())["test"]
    test_file = next((out / "data" / "split").glob("test.*"))
    r = run_cli("eval", str(out), "--data", str(test_file), "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    again = again.get("test", again)
    for key in ("reward_margin", "rewards_chosen", "rewards_rejected", "loss"):
        assert own[key] == pytest.approx(again[key], abs=2e-4), (key, own, again)
