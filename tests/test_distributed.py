"""Multi-process training (`tuneforge train CONFIG --nproc N`), on CPU: 2 processes, gloo DDP, the tiny BERT.

- 2 processes with the same global batch reach the final metrics of 1 process (dropout draws differ per rank, so
  within a tolerance: train loss and test loss within LOSS_TOL, accuracy within ACC_TOL);
- one run directory, one status.json, every metrics.jsonl step once, one set of start lines;
- a failure on rank 1 marks the run failed (one error line, exit code, lock released);
- `--resume` of a 2-process run continues from its last checkpoint;
- a CUDA out-of-memory error (raised on CPU by an injected callback) is a one-line error with the estimator's
  suggestions and a failed run;
- train.distributed's translation into TrainingArguments (FSDP2 / DeepSpeed: GPU-only runs, see the bottom) and
  the combinations that are config errors.

Failures are injected through a `sitecustomize.py` put on PYTHONPATH by the test (it patches the efficiency
callback in the ranks named by TF_TEST_FAIL_RANK): nothing in the package reads a test switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_config

#: train/test loss difference allowed between 1 process (batch 16) and 2 processes (batch 8 each): only the dropout
#: masks differ (each rank draws its own), measured at about 0.005
LOSS_TOL = 0.03
ACC_TOL = 0.1

FAIL_HOOK = textwrap.dedent("""
    import os
    fail_rank = os.environ.get("TF_TEST_FAIL_RANK")
    if fail_rank is not None and os.environ.get("RANK", "0") == fail_rank \\
            and os.environ.get("TF_TEST_ACTIVE") == "1":
        from tuneforge.training import callbacks as _cb
        _step = int(os.environ.get("TF_TEST_FAIL_STEP", "2"))
        _orig = _cb.EfficiencyCallback.on_step_end

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= _step:
                if os.environ.get("TF_TEST_FAIL_KIND") == "oom":
                    import torch
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                raise RuntimeError("injected failure")
            return _orig(self, args, state, control, **kw)
        _cb.EfficiencyCallback.on_step_end = on_step_end
""")


def _config(tmp_path, tiny_bert, data, **train) -> Path:
    cfg = tiny_config(tiny_bert, data, None, method="full")
    del cfg["output"]
    cfg["train"].update(
        {
            "max_steps": 12,
            "batch_size": 8,
            "group_by_length": False,
            "eval_strategy": "steps",
            "eval_steps": 12,
            "logging_steps": 2,
            **train,
        }
    )
    p = tmp_path / "dist.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _train(cwd, cfg, *args, fail: dict | None = None, timeout=240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    if fail is not None:
        hook = Path(cwd) / "hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(FAIL_HOOK)
        env["PYTHONPATH"] = f"{hook}{os.pathsep}{env['PYTHONPATH']}"
        env.update({"TF_TEST_ACTIVE": "1", **{f"TF_TEST_FAIL_{k.upper()}": str(v) for k, v in fail.items()}})
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", str(cfg), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _runs(cwd) -> list[Path]:
    return sorted(p for p in (Path(cwd) / "runs").iterdir() if not p.name.startswith("."))


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _summary(run) -> dict:
    return next(r for r in _rows(run) if "train_loss" in r)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def pair(tiny_bert, tmp_path_factory):
    """The same run in 1 process (batch 16) and in 2 processes (batch 8 each), both without output.dir."""
    import pandas as pd

    from conftest import make_sentiment_rows

    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "sentiment.csv"
    pd.DataFrame(make_sentiment_rows(240)).to_csv(data, index=False)
    cfg = _config(tmp, tiny_bert, str(data))
    one, two = tmp / "one", tmp / "two"
    one.mkdir()
    two.mkdir()
    r1 = _train(one, cfg, "train.batch_size=16")
    r2 = _train(two, cfg, "--nproc", "2")
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-2000:]
    return {"tmp": tmp, "cfg": cfg, "data": data, "one": (one, r1), "two": (two, r2)}


@pytest.mark.integration
def test_two_processes_reach_the_metrics_of_one(pair):
    (one, _), (two, _) = pair["one"], pair["two"]
    [run1], [run2] = _runs(one), _runs(two)
    s1, s2 = _summary(run1), _summary(run2)
    assert s1["step"] == s2["step"] == 12
    assert s1["num_input_tokens_seen"] == s2["num_input_tokens_seen"]  # the same global batches
    assert abs(s1["train_loss"] - s2["train_loss"]) < LOSS_TOL
    # the validation loss at the end (a distributed evaluation: each rank scores half, gathered)
    e1, e2 = [next(r for r in _rows(run) if "eval_loss" in r) for run in (run1, run2)]
    assert abs(e1["eval_loss"] - e2["eval_loss"]) < LOSS_TOL
    m1 = json.loads((run1 / "eval" / "metrics.json").read_text())["test"]
    m2 = json.loads((run2 / "eval" / "metrics.json").read_text())["test"]
    assert m1["n"] == m2["n"] == 24  # rank 0's report covers the whole test split (gathered from both ranks)
    assert abs(m1["accuracy"] - m2["accuracy"]) <= ACC_TOL
    assert abs(m1["auc_roc"] - m2["auc_roc"]) <= ACC_TOL
    eff = json.loads((run2 / "efficiency.json").read_text())
    assert eff["processes"] == 2 and eff["strategy"] == "ddp"


@pytest.mark.integration
def test_one_run_directory_written_once(pair):
    two, res = pair["two"]
    runs = _runs(two)
    assert len(runs) == 1, runs  # the launcher fixed the directory for both ranks
    run = runs[0]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed"
    assert not (run / "run.lock").exists()
    steps = [r["step"] for r in _rows(run) if "loss" in r]
    assert steps == sorted(set(steps)) == [1, 2, 4, 6, 8, 10, 12]  # every row once: only rank 0 logs
    assert sum("train_loss" in r for r in _rows(run)) == 1
    assert (run / "model" / "model.safetensors").is_file() and (run / "model" / "tuneforge.json").is_file()
    assert not list(run.glob("*.tmp")) and not (run / "checkpoints").exists()
    # rank 0 speaks for the run: each start line once, the memory estimate among them
    err = res.stderr
    assert err.count("tuneforge: run directory") == 1
    assert err.count("tuneforge: estimated peak memory") == 1
    assert err.count("tuneforge: done in") == 1
    assert "launching 2 process(es)" in err
    # the model loads and predicts like a single-process run's
    import tuneforge

    out = tuneforge.predict(run, ["a great film", "an awful movie"])
    assert len(out) == 2


@pytest.mark.integration
def test_failure_on_rank_1_fails_the_run(pair, tmp_path):
    res = _train(tmp_path, pair["cfg"], "--nproc", "2", "output.dir=runs/broken", fail={"rank": 1, "step": 3})
    assert res.returncode == 1, res.stderr[-2000:]
    errors = _error_lines(res.stderr)
    assert errors == ["error: rank 1: RuntimeError: injected failure"], res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    run = tmp_path / "runs" / "broken"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == "rank 1: RuntimeError: injected failure"
    assert not (run / "run.lock").exists()
    assert _runs(tmp_path) == [run]


@pytest.mark.integration
def test_resume_two_processes(pair, tmp_path):
    cfg = pair["cfg"]
    first = _train(
        tmp_path, cfg, "--nproc", "2", "train.save_steps=4", "eval.load_best_model=false", fail={"rank": 1, "step": 9}
    )
    assert first.returncode != 0
    [run] = _runs(tmp_path)
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert (run / "checkpoints" / "checkpoint-8").is_dir()
    # the launcher finds the unfinished run by name, as a single-process --resume does
    res = _train(tmp_path, cfg, "--nproc", "2", "train.save_steps=4", "eval.load_best_model=false", "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming from checkpoint-8" in res.stderr
    assert _runs(tmp_path) == [run]
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    steps = [r["step"] for r in _rows(run) if "loss" in r]
    assert steps == [1, 2, 4, 6, 8, 10, 12]
    # the resumed run ends where the uninterrupted 2-process run ended (same data order, same checkpointed state)
    [ref] = _runs(pair["two"][0])
    assert abs(_summary(run)["train_loss"] - _summary(ref)["train_loss"]) < LOSS_TOL


@pytest.mark.integration
def test_cuda_out_of_memory_is_one_line(pair, tmp_path):
    res = _train(tmp_path, pair["cfg"], "output.dir=runs/oom", fail={"rank": 0, "step": 2, "kind": "oom"})
    assert res.returncode == 7, res.stderr[-2000:]
    errors = _error_lines(res.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: CUDA out of memory (estimated peak"), errors
    assert "try " in errors[0] and "Traceback" not in res.stderr
    status = json.loads((tmp_path / "runs" / "oom" / "status.json").read_text())
    assert (
        status["state"] == "failed" and status["error"].startswith("CUDA out of memory") and "try " in status["error"]
    )


@pytest.mark.integration
def test_out_of_memory_in_process(pair, tmp_path):
    """The engine itself (the Python API): ResourceError, status failed with the suggestions."""
    import torch
    from transformers import TrainerCallback

    from tuneforge.errors import ResourceError
    from tuneforge.training.engine import train

    class Oom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total capacity)")

    with pytest.raises(ResourceError) as exc:
        train(str(pair["cfg"]), [f"output.dir={tmp_path / 'run'}"], callbacks=[Oom()])
    assert exc.value.exit_code == 7 and "\n" not in str(exc.value)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == str(exc.value)
    assert torch.cuda.OutOfMemoryError  # the class the engine catches exists on CPU builds too


# ---- config: train.distributed -----------------------------------------------------------------------------------
def _cfg(**sections):
    from tuneforge.config import validate_config

    raw = {"task": {"type": "classification"}, "method": {"name": "full"}}
    for key, value in sections.items():
        raw[key] = value
    return validate_config(raw)


def _problems(**sections) -> list[str]:
    from tuneforge.config.validation import config_problems

    raw = {"task": {"type": "classification"}, "method": {"name": "full"}, **sections}
    return config_problems(raw)[1]


@pytest.mark.unit
def test_defaults_are_ddp():
    d = _cfg().train.distributed
    assert d.strategy == "ddp" and d.fsdp.sharding == "full" and d.deepspeed.stage == 2


@pytest.mark.unit
def test_fsdp_translation(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    from tuneforge.training.distributed import training_arguments

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    cfg = _cfg(
        train={
            "distributed": {
                "strategy": "fsdp",
                "fsdp": {
                    "sharding": "shard_grad_op",
                    "activation_checkpointing": True,
                    "cpu_offload": True,
                    "cpu_ram_efficient_loading": True,
                },
            }
        }
    )
    args = training_arguments(cfg, model, "bf16")
    assert args["fsdp"] is True
    assert args["fsdp_config"] == {
        "version": 2,
        "reshard_after_forward": False,
        "cpu_offload": True,
        "activation_checkpointing": True,
        "cpu_ram_efficient_loading": True,
        "state_dict_type": "FULL_STATE_DICT",
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": ["BertLayer"],
    }
    assert args["average_tokens_across_devices"] is False
    # through PEFT's wrappers too, and an explicit list wins
    import peft

    lora = peft.get_peft_model(model, peft.LoraConfig(target_modules=["query", "value"]))
    assert training_arguments(cfg, lora, "bf16")["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["BertLayer"]
    cfg = _cfg(
        train={"distributed": {"strategy": "fsdp", "fsdp": {"auto_wrap": ["MyBlock"], "state_dict_type": "sharded"}}}
    )
    fc = training_arguments(cfg, model, "fp32")["fsdp_config"]
    assert fc["transformer_layer_cls_to_wrap"] == ["MyBlock"] and fc["state_dict_type"] == "SHARDED_STATE_DICT"
    assert fc["reshard_after_forward"] is True


@pytest.mark.unit
def test_fsdp_arguments_accepted_by_transformers(tiny_bert, tmp_path):
    """TrainingArguments turns the translation into accelerate's FSDP2 plugin arguments (built, not run: accelerate
    shards only on GPUs)."""
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from tuneforge.training.distributed import training_arguments

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    cfg = _cfg(train={"distributed": {"strategy": "fsdp", "fsdp": {"activation_checkpointing": True}}})
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", **training_arguments(cfg, model, "fp32")
    )
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["transformer_cls_names_to_wrap"] == "BertLayer"
    assert plugin["state_dict_type"] == "FULL_STATE_DICT" and plugin["activation_checkpointing"] is True
    assert plugin["reshard_after_forward"] is True


@pytest.mark.unit
def test_deepspeed_translation():
    from tuneforge.training.distributed import deepspeed_config, sharded

    cfg = _cfg(
        train={
            "distributed": {
                "strategy": "deepspeed",
                "deepspeed": {"stage": 3, "offload_optimizer": True, "offload_params": True},
            }
        }
    )
    ds = deepspeed_config(cfg.train.distributed, "bf16")
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu" and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["gradient_accumulation_steps"] == "auto"
    assert sharded(cfg)
    stage2 = _cfg(train={"distributed": {"strategy": "deepspeed"}})
    assert deepspeed_config(stage2.train.distributed, "fp16")["zero_optimization"] == {
        "stage": 2,
        "overlap_comm": True,
        "contiguous_gradients": True,
    }
    assert not sharded(stage2)


@pytest.mark.unit
@pytest.mark.parametrize(
    "sections, expected",
    [
        (
            {"method": {"name": "prefix"}, "train": {"distributed": {"strategy": "fsdp"}}},
            "train.distributed.strategy: 'fsdp' cannot train this run: prefix tuning",
        ),
        (
            {
                "method": {"name": "prefix"},
                "train": {"distributed": {"strategy": "deepspeed", "deepspeed": {"stage": 3}}},
            },
            "train.distributed.strategy: 'deepspeed' cannot train this run: prefix tuning",
        ),
        (
            {"method": {"name": "qlora"}, "train": {"distributed": {"strategy": "fsdp"}}},
            "train.distributed.strategy: 'fsdp' cannot train this run: method.quantization: 'nf4'",
        ),
        (
            {
                "train": {
                    "gradient_checkpointing": True,
                    "distributed": {"strategy": "fsdp", "fsdp": {"activation_checkpointing": True}},
                }
            },
            "train.distributed.fsdp.activation_checkpointing: choose it or train.gradient_checkpointing",
        ),
        ({"train": {"distributed": {"deepspeed": {"offload_params": True}}}}, "offload_params needs stage: 3"),
        ({"train": {"distributed": {"strategy": "megatron"}}}, "train.distributed.strategy:"),
    ],
)
def test_impossible_combinations_are_config_errors(sections, expected):
    problems = _problems(**sections)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.unit
def test_supported_combinations_pass():
    assert _problems(method={"name": "qlora"}, train={"distributed": {"strategy": "deepspeed"}}) == []
    assert _problems(method={"name": "prefix"}, train={"distributed": {"strategy": "ddp"}}) == []
    assert _problems(method={"name": "lora"}, train={"distributed": {"strategy": "fsdp"}}) == []


@pytest.mark.unit
def test_sharding_strategies_need_gpus_here():
    """On this (CPU) machine fsdp and deepspeed are refused before a run directory exists."""
    import torch

    from tuneforge.config import load_config
    from tuneforge.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("a GPU machine runs them")
    for strategy in ("fsdp", "deepspeed"):
        with pytest.raises(ConfigError, match=f"train.distributed.strategy: '{strategy}' needs CUDA GPUs"):
            load_config(
                raw={
                    "task": {"type": "classification"},
                    "method": {"name": "full"},
                    "train": {"distributed": {"strategy": strategy}},
                }
            )


@pytest.mark.integration
def test_launch_options_are_checked(pair, tmp_path):
    cfg = pair["cfg"]
    res = _train(tmp_path, cfg, "--nproc", "2", "--nnodes", "2", "--master-addr", "10.0.0.1")
    assert res.returncode == 2 and _error_lines(res.stderr) == [
        "error: output.dir: a multi-node run (--nnodes > 1) needs output.dir set to a directory every node sees "
        "(a shared filesystem); rank 0 writes the run there"
    ]
    res = _train(tmp_path, cfg, "--nproc", "2", "train.distributed.strategy=fsdp")
    assert res.returncode == 2 and "needs CUDA GPUs" in res.stderr
    res = _train(tmp_path, cfg, "--nproc", "0")
    assert res.returncode == 2 and _error_lines(res.stderr) == ["error: --nproc: must be at least 1, got 0"]
    assert not (tmp_path / "runs").exists()  # nothing was started


# ---- GPU-only (not run in CI): FSDP2 / DeepSpeed runs --------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.skipif(
    not __import__("torch").cuda.is_available() or __import__("torch").cuda.device_count() < 2,
    reason="FSDP2 runs need 2 CUDA GPUs (accelerate shards only on GPUs)",
)
def test_fsdp_two_gpus_saves_the_usual_model(pair, tmp_path):
    res = _train(
        tmp_path, pair["cfg"], "--nproc", "2", "train.distributed.strategy=fsdp", "output.dir=runs/fsdp", timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "runs" / "fsdp"
    assert (run / "model" / "model.safetensors").is_file()
    import tuneforge

    assert len(tuneforge.predict(run, ["a great film"])) == 1
