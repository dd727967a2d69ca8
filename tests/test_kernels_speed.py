"""Speed levers as config switches: resolution (auto on CPU = off, explicit true works for the chunked loss
and fused LoRA, errors name the key), and a tiny causal-LM LoRA training step with the levers on giving the
same loss and gradients as with them off, also through tuneforge.train; fused LoRA on a QLoRA model; liger + compile
decided with a stand-in for liger-kernel (compile never traces into it); the GPU benchmark's dry run, its row-failure
handling and its sequence-length scan."""

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from tuneforge.config.schema import TrainSection
from tuneforge.errors import ConfigError
from tuneforge.tasks.causal_lm import CausalLMTask
from tuneforge.training import speed
from tuneforge.training.speed import apply_speedups, optimizer_name

sys.path.insert(0, str(Path(__file__).parent))


def tiny_lora_llama(dropout=0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    m = get_peft_model(
        LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear")
    )
    for n, p in m.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    return m


def task():
    return CausalLMTask.__new__(CausalLMTask)  # the hook needs no config


def lora():
    from methods_helpers import make_method

    return make_method("lora")  # offers train.fused_lora through Method.speed_levers


@pytest.mark.unit
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU resolution")
def test_auto_on_cpu_is_off_with_one_line_note(capfd):
    m = tiny_lora_llama()
    levers = apply_speedups(m, TrainSection(), task(), lora())
    assert {lv.key: lv.on for lv in levers} == {
        "liger": False,
        "chunked_loss": False,
        "fused_lora": False,
        "compile": False,
    }
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "speed levers" in err and "no CUDA device" in err
    assert "forward" not in m.get_base_model().__dict__


@pytest.mark.unit
def test_explicit_true_on_cpu_applies_chunked_loss_and_fused_lora():
    m = tiny_lora_llama()
    levers = {
        lv.key: lv
        for lv in apply_speedups(
            m, TrainSection(chunked_loss=True, fused_lora=True, compile=False, liger=False), task(), lora()
        )
    }
    assert levers["chunked_loss"].on and levers["fused_lora"].on and "14 of 14" in levers["fused_lora"].note
    assert not levers["compile"].on and "false" in levers["compile"].note


@pytest.mark.unit
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU resolution")
def test_explicit_true_that_cannot_apply_names_the_key():
    with pytest.raises(ConfigError, match=r"train.liger: true, but no CUDA"):
        apply_speedups(tiny_lora_llama(), TrainSection(liger=True), task(), lora())
    from tuneforge.tasks.base import Task

    other = Task.__new__(Task)
    other.name = "classification"
    with pytest.raises(ConfigError, match=r"train.chunked_loss: true, but the classification task has no fused"):
        apply_speedups(tiny_lora_llama(), TrainSection(chunked_loss=True, fused_lora=False), other, lora())


@pytest.mark.unit
def test_fused_lora_on_qlora_fuses_every_4bit_layer(tmp_path):
    pytest.importorskip("bitsandbytes")
    from methods_helpers import build, make_method, save_tiny_llama

    method = make_method("qlora", dropout=0.0)
    model, _ = build("llama", save_tiny_llama(tmp_path / "base"), method)
    levers = {
        lv.key: lv
        for lv in apply_speedups(
            model, TrainSection(chunked_loss=False, fused_lora=True, compile=False, liger=False), task(), method
        )
    }
    assert levers["fused_lora"].on and "14 of 14" in levers["fused_lora"].note


@pytest.mark.unit
def test_fused_lora_auto_with_dropout_notes_instead_of_failing(monkeypatch):
    monkeypatch.setattr(speed, "cuda_available", lambda: True)
    monkeypatch.setattr(speed.importlib.util, "find_spec", lambda name, *a: None)  # no liger
    levers = {
        lv.key: lv for lv in apply_speedups(tiny_lora_llama(dropout=0.1), TrainSection(compile=False), task(), lora())
    }
    assert not levers["fused_lora"].on and "0 of 14" in levers["fused_lora"].note
    assert levers["chunked_loss"].on and not levers["liger"].on and "not installed" in levers["liger"].note


@pytest.mark.unit
def test_optimizer_names(monkeypatch):
    assert optimizer_name("adamw") == "adamw_torch"
    assert optimizer_name("adamw_fused") == "adamw_torch_fused"
    assert optimizer_name("auto") in ("adamw_torch_fused", "adamw_torch")
    monkeypatch.setattr(speed.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match="train.optimizer: 'adamw_8bit' needs bitsandbytes"):
        optimizer_name("adamw_8bit")


@pytest.mark.unit
def test_config_accepts_the_switches():
    from tuneforge.config import load_config

    cfg = load_config(
        raw={"task": {"type": "causal_lm"}, "method": {"name": "lora"}},
        overrides=[
            "train.chunked_loss=true",
            "train.fused_lora=false",
            "train.compile=auto",
            "train.optimizer=adamw_8bit",
        ],
    )
    assert cfg.train.chunked_loss is True and cfg.train.fused_lora is False and cfg.train.compile == "auto"
    with pytest.raises(ConfigError):
        load_config(
            raw={"task": {"type": "causal_lm"}, "method": {"name": "lora"}}, overrides=["train.chunked_loss=sometimes"]
        )


@pytest.mark.unit
def test_training_steps_with_levers_match_without():
    ref = tiny_lora_llama()
    fast = copy.deepcopy(ref)
    apply_speedups(fast, TrainSection(chunked_loss=True, fused_lora=True, compile=False, liger=False), task(), lora())
    g = torch.Generator().manual_seed(3)
    losses = {}
    for name, m in (("ref", ref), ("fast", fast)):
        m.train()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        losses[name] = []
        g.manual_seed(3)
        for _ in range(3):
            ids = torch.randint(0, 101, (2, 12), generator=g)
            labels = ids.clone()
            labels[:, :3] = -100
            out = m(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(17))
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            losses[name].append(out.loss.item())
    assert losses["ref"][0] != losses["ref"][-1]  # it learns, so later steps compare trained weights
    assert losses["fast"] == pytest.approx(losses["ref"], rel=1e-4, abs=1e-5)


@pytest.mark.unit
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_turns_levers_on():
    m = tiny_lora_llama().cuda()
    levers = {lv.key: lv.on for lv in apply_speedups(m, TrainSection(compile=False), task(), lora())}
    assert levers["chunked_loss"] and levers["fused_lora"]


@pytest.mark.integration
def test_train_run_with_levers_matches_run_without(tmp_path):
    from sft_common import chat_rows, make_tiny_llama, write_jsonl
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    model = make_tiny_llama(tmp_path / "m")
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(12))
    first_losses = {}
    for on in (False, True):
        raw = {
            "model": {"name": model},
            "data": {"train": data, "max_length": 96, "split": {"validation": 0.0, "test": 0.2}},
            "task": {"type": "causal_lm", "report_prompts": 0, "compare_base": False},
            "method": {"name": "lora", "dropout": 0.0},
            "train": {
                "max_steps": 2,
                "batch_size": 4,
                "learning_rate": 5e-3,
                "logging_steps": 1,
                "report_to": "none",
                "eval_strategy": "no",
                "chunked_loss": on,
                "fused_lora": on,
                "compile": False,
                "liger": False,
            },
            "output": {"dir": str(tmp_path / f"run-{on}")},
        }
        train(load_config(raw=raw))
        rows = [json.loads(x) for x in (tmp_path / f"run-{on}" / "metrics.jsonl").read_text().splitlines()]
        first_losses[on] = [r["loss"] for r in rows if "loss" in r and "eval_loss" not in r]
    assert len(first_losses[True]) == 2
    assert first_losses[True] == pytest.approx(first_losses[False], rel=1e-4)


def load_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_train", Path(__file__).parents[1] / "benchmarks" / "gpu_train.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.unit
@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU message")
def test_gpu_benchmark_without_cuda_says_so_and_exits_0(capsys):
    assert load_bench().main(["lora"]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out


@pytest.mark.unit
def test_gpu_benchmark_dry_run_same_loss_both_stacks(capsys):
    bench = load_bench()
    assert bench.main(["--dry-run", "lora", "--steps", "3", "--warmup", "1", "--timed", "1", "--gc", "off"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"stack"')]
    assert [r["stack"].split()[0] for r in rows] == ["peer", "tuneforge"]
    assert "fused_lora" in rows[1]["stack"] and "chunked_loss" in rows[1]["stack"]
    assert rows[0]["loss_first"] == pytest.approx(rows[1]["loss_first"], abs=1e-4)
    assert rows[0]["loss_last"] == pytest.approx(rows[1]["loss_last"], abs=1e-4)
    assert rows[0]["loss_last"] < rows[0]["loss_first"]
    cmp = [json.loads(line) for line in out.splitlines() if line.startswith('{"method"')]
    assert cmp and cmp[0]["loss_abs_diff"] < 1e-4 and cmp[0]["tps_vs_peer_here"] > 0


@pytest.mark.unit
def test_gpu_benchmark_keeps_going_past_a_failing_row_and_writes_each_row_at_once(tmp_path, monkeypatch, capsys):
    bench = load_bench()
    out = tmp_path / "rows.jsonl"
    real = bench.Bench.measure
    seen_in_file = []

    def measure(self, stack, method, gc, *a, **k):
        seen_in_file.append(len(out.read_text().splitlines()) if out.exists() else 0)
        if stack == "peer" and method == "lora":
            raise RuntimeError("injected failure\nsecond line")
        return real(self, stack, method, gc, *a, **k)

    monkeypatch.setattr(bench.Bench, "measure", measure)
    rc = bench.main(
        ["--dry-run", "lora", "full", "--steps", "2", "--warmup", "1", "--timed", "1", "--gc", "off", "--out", str(out)]
    )
    assert rc == 1  # a failed row shows in the exit status, after every other row has run
    assert seen_in_file == [0, 1, 2, 3]  # each row was in the file before the next one started
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    runs = [r for r in rows if "stack" in r]
    assert [(r["stack"].split()[0], r["method"]) for r in runs] == [
        ("peer", "lora"),
        ("tuneforge", "lora"),
        ("peer", "full"),
        ("tuneforge", "full"),
    ]
    assert runs[0]["error"] == "RuntimeError: injected failure" and "tokens_per_s" not in runs[0]
    assert all(r["tokens_per_s"] > 0 and "error" not in r for r in runs[1:])
    assert runs[2]["loss_first"] == pytest.approx(runs[3]["loss_first"], abs=1e-4)  # full fine-tuning row pair
    cmp = {r["method"]: r for r in rows if "stack" not in r}
    assert cmp["lora"]["tps_vs_peer_here"] is None and cmp["full"]["tps_vs_peer_here"] > 0
    text = capsys.readouterr().out
    assert "ERROR" in text and "1 row(s) failed: peer lora: RuntimeError: injected failure" in text


@pytest.mark.unit
def test_gpu_benchmark_seq_scan_doubles_until_oom_and_reports_the_last_fit(tmp_path, monkeypatch):
    bench = load_bench()
    calls = []

    def measure(self, stack, method, gc, steps, warmup, timed, liger=False, bs=None, seq=None):
        calls.append((stack, method, gc, bs, seq))
        if stack == "peer" and seq == 64:
            raise ValueError("not an OOM")
        row = {"stack": stack + " (label)", "method": method, "gc": gc, "batch": bs, "seq": seq}
        fits = seq <= (128 if stack == "tuneforge" else 32)
        return {**row, "tokens_per_s": seq, "peak_GiB": None} if fits else {**row, "oom": True}

    monkeypatch.setattr(bench.Bench, "measure", measure)
    b = bench.Bench(tiny=True)
    t = b.seq_scan("tuneforge", 16, 1024, 1)
    assert t["max_seq"] == 128 and t["oom_at"] == 256 and t["seq_tried"] == [16, 32, 64, 128, 256]
    assert t["stack"] == "tuneforge (label)" and t["tokens_per_s"] == 128
    assert {c[1:4] for c in calls} == {("lora", True, 1)}  # LoRA, gradient checkpointing on, the scan's batch
    capped = b.seq_scan("tuneforge", 16, 64, 1)
    assert capped["max_seq"] == 64 and capped["oom_at"] is None  # stopped at --scan-max, not by memory

    # through main: the peer's scan fails (not an OOM) and is recorded; tuneforge's scan still runs
    out = tmp_path / "rows.jsonl"
    monkeypatch.setattr(
        bench.Bench,
        "measure",
        lambda self, stack, method, gc, *a, **k: (
            measure(self, stack, method, gc, *a, **k)
            if k.get("seq")
            else {"stack": stack, "method": method, "gc": gc, "tokens_per_s": 1, "peak_GiB": None, "loss_last": 1.0}
        ),
    )
    assert (
        bench.main(
            [
                "--dry-run",
                "lora",
                "--gc",
                "on",
                "--seq-scan",
                "--scan-start",
                "16",
                "--scan-max",
                "512",
                "--out",
                str(out),
            ]
        )
        == 1
    )
    scans = [json.loads(line) for line in out.read_text().splitlines() if '"scan"' in line]
    assert [s["stack"].split()[0] for s in scans] == ["peer", "tuneforge"]
    assert scans[0]["error"] == "ValueError: not an OOM" and scans[1]["max_seq"] == 128


# ---- liger + compile, decided on CPU with a stand-in for liger-kernel (the real one needs a GPU) ------------------
def fake_liger(monkeypatch):
    """Patch `_apply_liger` with what liger-kernel does to a Llama, minus the Triton: a liger forward bound on every
    RMSNorm instance and RoPE swapped in modeling_llama. Each call records whether torch.compile was tracing it."""
    from transformers.models.llama import modeling_llama

    calls = []
    rope_orig = modeling_llama.apply_rotary_pos_emb

    def rms_forward(self, hidden_states):
        calls.append(("norm", torch.compiler.is_compiling()))
        return type(self).forward(self, hidden_states)

    def rope(*a, **k):
        calls.append(("rope", torch.compiler.is_compiling()))
        return rope_orig(*a, **k)

    for f in (rms_forward, rope):
        f.__module__ = "liger_kernel.transformers.stand_in"

    def apply(model):
        for m in model.modules():
            if type(m).__name__ == "LlamaRMSNorm":
                m.__dict__["forward"] = rms_forward.__get__(m, type(m))
        monkeypatch.setattr(modeling_llama, "apply_rotary_pos_emb", rope)

    monkeypatch.setattr(speed, "cuda_available", lambda: True)
    real_find_spec = speed.importlib.util.find_spec
    monkeypatch.setattr(
        speed.importlib.util,
        "find_spec",  # liger "installed"
        lambda name, *a: object() if name == "liger_kernel" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(speed, "_apply_liger", apply)
    return calls


def eager_compile_blocks(model):
    """`_compile_blocks` with Dynamo's eager backend: the same tracing, no Inductor / C++ compiler on CPU."""
    from tuneforge.models.blocks import find_blocks

    _, blocks = find_blocks(model)
    for b in blocks:
        b.compile(backend="eager")
    return len(blocks)


@pytest.mark.unit
def test_liger_on_compile_auto_stays_off_with_the_reason(monkeypatch):
    fake_liger(monkeypatch)
    monkeypatch.setattr(speed, "_compile_blocks", lambda m: pytest.fail("compile must not run"))
    levers = {lv.key: lv for lv in apply_speedups(tiny_lora_llama(), TrainSection(), task(), lora())}
    assert levers["liger"].on and not levers["compile"].on
    assert (
        levers["compile"].note == speed.LIGER_ON_COMPILE_AUTO
        and "Inductor cannot compile" in speed.LIGER_ON_COMPILE_AUTO
    )


@pytest.mark.unit
def test_compile_without_liger_is_unchanged(monkeypatch):
    monkeypatch.setattr(speed, "cuda_available", lambda: True)
    monkeypatch.setattr(speed.importlib.util, "find_spec", lambda name, *a: None)  # no liger
    monkeypatch.setattr(speed, "_compile_blocks", lambda m: 2)
    monkeypatch.setattr(speed, "fence_off_liger", lambda m: pytest.fail("nothing to fence off"))
    levers = {lv.key: lv for lv in apply_speedups(tiny_lora_llama(), TrainSection(), task(), lora())}
    assert levers["compile"].on and levers["compile"].note == "on (auto): 2 blocks"


@pytest.mark.unit
def test_liger_with_explicit_compile_never_traces_liger(monkeypatch):
    calls = fake_liger(monkeypatch)
    monkeypatch.setattr(speed, "_compile_blocks", eager_compile_blocks)
    ref = tiny_lora_llama()
    m = copy.deepcopy(ref)
    levers = {lv.key: lv for lv in apply_speedups(m, TrainSection(compile=True), task(), lora())}
    # 2 blocks x 2 norms + the final norm, and RoPE in modeling_llama
    assert levers["liger"].on and levers["compile"].on and "6 liger kernels left eager" in levers["compile"].note
    assert speed.fence_off_liger(m) == 6  # idempotent: nothing wrapped twice
    assert not getattr(m.get_base_model().model.norm.forward.__wrapped__, "_torchdynamo_disable", False)
    ids = torch.randint(0, 101, (2, 10), generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    with torch.no_grad():
        out = m(input_ids=ids).logits
    assert {c[0] for c in calls} == {"norm", "rope"}
    assert not any(traced for _, traced in calls)  # every liger call ran eagerly, between compiled graphs
    with torch.no_grad():
        torch.testing.assert_close(out, ref(input_ids=ids).logits, rtol=1e-5, atol=1e-5)

    # the control: the same compile without the fence does trace into the stand-in's functions
    calls.clear()
    bare = copy.deepcopy(ref)
    speed._apply_liger(bare)
    eager_compile_blocks(bare)
    torch._dynamo.reset()
    with torch.no_grad():
        bare(input_ids=ids)
    assert any(traced for _, traced in calls)
