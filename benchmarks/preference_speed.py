"""DPO training speed and memory on CPU: tuneforge's preference task vs TRL 1.16's DPOTrainer, in one run.

Both sides train the same model (SmolLM2-135M-Instruct, float32 weights as loaded) with the same LoRA (r16, alpha
32, dropout 0, all linear layers), on the same pairs (the first N pairs of builtin:dpo-en-demo whose templated prompt
fits data.max_prompt_length, read by tuneforge's own reader and handed to both as TRL's conversational
prompt/chosen/rejected message lists; TRL applies the chat template itself), in the same batches (tuneforge's
length-grouped order, given to TRL in that order through a sequential sampler), with the same schedule (fused AdamW,
linear decay from --lr to 0, no warm-up, no weight decay, clipping 1.0), seed (so the same LoRA initialisation: the
script prints a fingerprint of both), DPO beta 0.1, max_length 512 (TRL 1.16 has no max_prompt_length: the pairs are
chosen so that no prompt is over it), and the reference = the LoRA model with its adapters off (TRL does that itself
for a base model plus a peft_config and ref_model=None). Each run is its own subprocess; the sides alternate.

What is measured, identically on both sides:
  * train tokens/s: the real (non-padding) tokens of the chosen + rejected sequences of the timed steps, counted from
    tuneforge's encoding of the pairs (TRL's batches hold the same tokens: each side's own attention-mask count is
    printed; TRL also scores the "\\n" after <|im_end|>, which tuneforge leaves unscored), divided by the wall time
    from the end of the last warm-up step to the end of the last step (TrainerCallback.on_step_end timestamps: the
    forward/backward passes, the reference pass, the optimizer step, data loading and per-step logging).
  * with a precomputed reference, the time of that pass (TrainerCallback.on_init_end -> on_train_begin, which
    holds it on both sides; about 0.4 s without one) is added pro rata (timed pairs / precomputed pairs):
    "tok/s incl. precompute", the number the ratios use. "tok/CPU-s": the same tokens per CPU second of the process
    (time.process_time, all threads), steadier than wall time on a machine shared with other jobs.
  * peak RSS: resource.getrusage(RUSAGE_SELF).ru_maxrss inside the subprocess at on_train_end.
  * the loss of every step (logging_steps 1); the first is ln 2 = 0.6931 on both (policy = reference at step 0).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/preference_speed.py [--steps 4] [--warmup 1] [--repeats 3]
        [--tuneforge precompute] [--trl precompute-fp32] [--json PATH]

The default (each side's fastest setting that trains like fp32) takes about 11 minutes on 2 CPU cores (a step of 2
pairs is 12-30 s there). Both reference modes and TRL's bf16 autocast, about 30 minutes:

    .venv/bin/python benchmarks/preference_speed.py --tuneforge precompute,adapters \\
        --trl precompute-fp32,ref-fp32,precompute-bf16

`--sweep` (or `--sweep-only`) first trains every setting of both sides once for `--sweep-steps` steps (tuneforge:
train.precision auto / fp32 / bf16, task.reference adapters / precompute, train.fused_lora; TRL:
precompute_ref_log_probs x bf16, its default gradient_checkpointing=True, padding_free, use_liger_kernel) and
prints what each gives (about 20 minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

MODEL = "builtin:smollm2-135m-instruct"
DATA = "builtin:dpo-en-demo"
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
BETA = 0.1

#: tuneforge settings: name -> overrides of the run config (train.*, task.*)
TF_SETTINGS = {
    "adapters": {"task": {"reference": "adapters"}, "train": {"precision": "fp32"}},
    "precompute": {"task": {"reference": "precompute"}, "train": {"precision": "fp32"}},
    "adapters-auto": {"task": {"reference": "adapters"}, "train": {"precision": "auto"}},
    "adapters-bf16": {"task": {"reference": "adapters"}, "train": {"precision": "bf16"}},
    "precompute-bf16": {"task": {"reference": "precompute"}, "train": {"precision": "bf16"}},
    "adapters-fusedlora": {"task": {"reference": "adapters"}, "train": {"precision": "fp32", "fused_lora": True}},
    "precompute-fusedlora": {"task": {"reference": "precompute"}, "train": {"precision": "fp32", "fused_lora": True}},
}
#: TRL settings: name -> DPOConfig keywords beyond the common ones
TRL_SETTINGS = {
    "ref-fp32": {"precompute_ref_log_probs": False, "bf16": False},
    "precompute-fp32": {"precompute_ref_log_probs": True, "bf16": False},
    "ref-bf16": {"precompute_ref_log_probs": False, "bf16": True},
    "precompute-bf16": {"precompute_ref_log_probs": True, "bf16": True},
    "ref-fp32-gc": {"precompute_ref_log_probs": False, "bf16": False, "gradient_checkpointing": True},
    "ref-fp32-paddingfree": {"precompute_ref_log_probs": False, "bf16": False, "padding_free": True},
    "ref-fp32-liger": {"precompute_ref_log_probs": False, "bf16": False, "use_liger_kernel": True},
}
SWEEP_TF = ["adapters-auto", "adapters", "adapters-bf16", "precompute", "adapters-fusedlora"]
SWEEP_TRL = [
    "ref-fp32",
    "ref-bf16",
    "precompute-fp32",
    "precompute-bf16",
    "ref-fp32-gc",
    "ref-fp32-paddingfree",
    "ref-fp32-liger",
]


# ---- data: tuneforge's reader, shared by both sides --------------------------------------------------------------
def base_config(a, data: str, out: str) -> dict:
    return {
        "model": {"name": MODEL},
        "data": {
            "train": data,
            "max_length": a.max_length,
            "max_prompt_length": a.max_prompt_length,
            "bad_records": "skip",
            "split": {"validation": 0.0, "test": 0.0},
        },
        "task": {"type": "preference", "loss": "dpo", "beta": BETA, "report_prompts": 0},
        "method": LORA,
        "train": {
            "max_steps": a.warmup + a.steps,
            "batch_size": a.batch_size,
            "learning_rate": a.lr,
            "scheduler": "linear",
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "max_grad_norm": 1.0,
            "seed": a.seed,
            "eval_strategy": "no",
            "report_to": "none",
            "logging_steps": 1,
        },
        "output": {"dir": out, "overwrite": True},
    }


def pair_key(chosen_ids, rejected_ids) -> str:
    return hashlib.sha1(json.dumps([list(chosen_ids), list(rejected_ids)]).encode()).hexdigest()[:16]


def prepare_pairs(a, workdir: str) -> dict:
    """The first N usable pairs of builtin:dpo-en-demo through tuneforge's reader (prompts over max_prompt_length
    left out, as a run with data.bad_records=skip does), written as TRL conversational JSONL; and tuneforge's encoding
    of each pair (its real token count, and a key to recognise it in a batch)."""
    from tuneforge.config import load_config
    from tuneforge.data.preference_encode import encode_pairs
    from tuneforge.models.loader import load_tokenizer, resolve_model
    from tuneforge.tasks.preference import PreferenceTask
    from tuneforge.tasks.preference_prepare import read_pairs

    cfg = load_config(raw=base_config(a, DATA, os.path.join(workdir, "unused")))
    tok = load_tokenizer(resolve_model(MODEL))
    settings = PreferenceTask(cfg)._pair_settings(tok)
    _, records = read_pairs(cfg, DATA, "data.train", tok, settings, [], {})
    n = a.pairs or (a.warmup + a.steps) * a.batch_size
    if len(records) < n:
        raise SystemExit(f"only {len(records)} pairs of {DATA} have a prompt within {a.max_prompt_length} tokens")
    records = records[:n]
    rows = [
        {
            "prompt": r["prompt"],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in records
    ]
    path = os.path.join(workdir, "pairs.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    stats: dict = {}
    enc = encode_pairs(records, tok, "train", stats, settings)
    keys = [pair_key(c, r) for c, r in zip(enc["chosen_input_ids"], enc["rejected_input_ids"])]
    tokens = [len(c) + len(r) for c, r in zip(enc["chosen_input_ids"], enc["rejected_input_ids"])]
    return {
        "path": path,
        "rows": rows,
        "keys": keys,
        "tokens": tokens,
        "truncated": stats.get("train_truncated", 0),
        "template": settings.chat.name if settings.chat is not None else None,
    }


# ---- the subprocesses --------------------------------------------------------------------------------------------
def _recorder(collect_keys: bool):
    """A TrainerCallback that keeps timestamps, losses, peak RSS, the LoRA init fingerprint, and the batches as the
    data loader hands them out (its collate_fn wrapped at on_train_begin)."""
    import resource

    import torch
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self):
            self.t_init_end = self.t_train_begin = None
            self.step_begin, self.step_end, self.losses = [], [], {}
            self.cpu_end, self.cpu_init_end, self.cpu_train_begin = [], None, None
            self.batches, self.batch_tokens = [], []
            self.rss_mb = None
            self.lora_fingerprint = None
            self.optimizer = None

        def on_init_end(self, args, state, control, **kw):
            self.t_init_end, self.cpu_init_end = time.perf_counter(), time.process_time()

        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, optimizer=None, **kw):
            self.t_train_begin, self.cpu_train_begin = time.perf_counter(), time.process_time()
            self.optimizer = type(optimizer).__name__ if optimizer is not None else None
            if model is not None:
                with torch.no_grad():
                    a = [p.double().abs().sum().item() for n, p in model.named_parameters() if "lora_A" in n]
                    self.lora_fingerprint = [len(a), sum(a)]
            if train_dataloader is not None:
                # accelerate's DataLoaderShard iterates the DataLoader it wraps: wrap that one's collate_fn
                loader = train_dataloader.__dict__.get("base_dataloader", train_dataloader)
                inner = loader.collate_fn

                def collate(features, _inner=inner):
                    batch = _inner(features)
                    if collect_keys:
                        self.batches.append(
                            [pair_key(f["chosen_input_ids"], f["rejected_input_ids"]) for f in features]
                        )
                    self.batch_tokens.append(int(batch["attention_mask"].sum()))
                    return batch

                loader.collate_fn = collate

        def on_step_begin(self, args, state, control, **kw):
            self.step_begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            self.step_end.append(time.perf_counter())
            self.cpu_end.append(time.process_time())  # CPU seconds of all the process's threads

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses[int(state.global_step)] = float(logs["loss"])

        def on_train_end(self, args, state, control, **kw):
            self.rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        def result(self) -> dict:
            return {
                "precompute_window_s": self.t_train_begin - self.t_init_end,
                "precompute_window_cpu_s": self.cpu_train_begin - self.cpu_init_end,
                "cpu_end": self.cpu_end,
                "step_begin": self.step_begin,
                "step_end": self.step_end,
                "losses": [self.losses.get(k) for k in range(1, len(self.step_end) + 1)],
                "batches": self.batches,
                "batch_tokens_own": self.batch_tokens,
                "peak_rss_mb": self.rss_mb,
                "lora_fingerprint": self.lora_fingerprint,
                "optimizer": self.optimizer,
            }

    return Recorder()


def worker_tuneforge(spec: dict) -> dict:
    import resource

    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    a = argparse.Namespace(**spec["args"])
    raw = base_config(a, spec["data"], spec["out"])
    raw["data"]["format"] = "trl"
    raw["data"]["bad_records"] = "error"  # every pair was checked to fit
    for section, values in TF_SETTINGS[spec["setting"]].items():
        raw[section].update(values)
    rec = _recorder(collect_keys=True)
    t0 = time.perf_counter()
    train(load_config(raw=raw), callbacks=[rec], evaluate_test=False)
    out = rec.result()
    out["train_call_s"] = time.perf_counter() - t0
    out["peak_rss_mb_exit"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def worker_trl(spec: dict) -> dict:
    import resource

    import datasets
    import torch
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    from tuneforge.models.loader import resolve_model

    a = argparse.Namespace(**spec["args"])
    path = resolve_model(MODEL)
    rows = [json.loads(line) for line in open(spec["data"], encoding="utf-8")]
    rows = [rows[i] for i in spec["order"]]  # tuneforge's batches, in its order

    class InOrder(DPOTrainer):
        def _get_train_sampler(self, *args, **kw):
            return SequentialSampler(self.train_dataset)

    extra = dict(TRL_SETTINGS[spec["setting"]])
    config = DPOConfig(
        output_dir=spec["out"],
        per_device_train_batch_size=a.batch_size,
        max_steps=a.warmup + a.steps,
        learning_rate=a.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        seed=a.seed,
        beta=BETA,
        loss_type="sigmoid",
        max_length=a.max_length,
        use_cpu=True,
        gradient_checkpointing=extra.pop("gradient_checkpointing", False),
        precompute_ref_batch_size=2 * a.batch_size,  # as tuneforge's precompute (its eval batch size)
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **extra,
    )
    rec = _recorder(collect_keys=False)
    set_seed(a.seed)  # as tuneforge: seed, load, then the LoRA layers (same initialisation)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    trainer = InOrder(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tok,
        peft_config=LoraConfig(
            r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
        callbacks=[rec],
    )
    assert trainer.ref_model is None
    if config.padding_free and not trainer.padding_free:
        raise SystemExit("padding_free=True: TRL 1.16 warns and falls back to padding (same run as without it)")
    t0 = time.perf_counter()
    trainer.train()
    out = rec.result()
    out["train_call_s"] = time.perf_counter() - t0
    out["peak_rss_mb_exit"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["effective"] = {
        "bf16": bool(trainer.args.bf16),
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "padding_free": bool(getattr(trainer, "padding_free", False)),
        "use_liger_kernel": bool(trainer.args.use_liger_kernel),
    }
    return out


def run_worker(side: str, setting: str, a, prep: dict, order: list[int] | None, workdir: str, tag: str) -> dict:
    spec = {
        "side": side,
        "setting": setting,
        "args": {
            k: getattr(a, k)
            for k in ("steps", "warmup", "batch_size", "max_length", "max_prompt_length", "lr", "seed", "pairs")
        },
        "data": prep["path"],
        "order": order,
        "out": os.path.join(workdir, f"run-{tag}"),
    }
    spec_path = os.path.join(workdir, f"spec-{tag}.json")
    res_path = os.path.join(workdir, f"result-{tag}.json")
    log_path = os.path.join(workdir, f"log-{tag}.txt")
    with open(spec_path, "w") as fh:
        json.dump(spec, fh)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.call(
            [sys.executable, os.path.abspath(__file__), "--worker", spec_path, res_path],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_DATASETS_CACHE": os.path.join(workdir, f"hf-{tag}")},
        )
    wall = time.perf_counter() - t0
    if rc != 0 or not os.path.exists(res_path):
        tail = open(log_path, encoding="utf-8", errors="replace").read().strip().splitlines()[-6:]
        return {"side": side, "setting": setting, "error": f"exit {rc}: " + " | ".join(tail), "wall_s": wall}
    res = json.load(open(res_path))
    res.update(side=side, setting=setting, wall_s=wall)
    return summarise(res, a, prep, order)


def summarise(res: dict, a, prep: dict, order: list[int] | None) -> dict:
    """Tokens/s over the timed steps from the per-pair counts of tuneforge's encoding, and the batches' order."""
    index = {k: i for i, k in enumerate(prep["keys"])}
    if res["side"] == "tuneforge":
        batches = [[index[k] for k in b] for b in res["batches"]]
    else:
        flat = order
        batches = [flat[i : i + a.batch_size] for i in range(0, len(flat), a.batch_size)]
    ends = res["step_end"]
    total_steps = a.warmup + a.steps
    if len(ends) < total_steps:
        res["error"] = f"only {len(ends)} of {total_steps} steps ran"
        return res
    timed = batches[a.warmup : total_steps]
    tokens = sum(prep["tokens"][i] for b in timed for i in b)
    seconds = ends[total_steps - 1] - ends[a.warmup - 1]
    share = (len(timed) * a.batch_size) / len(prep["tokens"])  # of the precomputed pairs, those timed
    pro_rata = res["precompute_window_s"] * share
    cpu = res["cpu_end"][total_steps - 1] - res["cpu_end"][a.warmup - 1]
    res.update(
        batches_pairs=batches,
        timed_tokens=tokens,
        timed_tokens_own=sum(res["batch_tokens_own"][a.warmup : total_steps]),
        timed_seconds=seconds,
        tokens_per_second=tokens / seconds,
        total_tokens_per_second=tokens / (seconds + pro_rata),
        timed_cpu_seconds=cpu,
        tokens_per_cpu_second=tokens / (cpu + res["precompute_window_cpu_s"] * share),
        step_seconds=[ends[i] - ends[i - 1] for i in range(1, len(ends))],
        first_loss=res["losses"][0],
        last_loss=res["losses"][total_steps - 1],
    )
    return res


# ---- the report --------------------------------------------------------------------------------------------------
def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.0f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})" if xs else "n/a"


def table(results: list[dict]) -> list[dict]:
    groups: dict = {}
    for r in results:
        groups.setdefault((r["side"], r["setting"]), []).append(r)
    rows = []
    for (side, setting), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        rows.append(
            {
                "side": side,
                "setting": setting,
                "runs": len(ok),
                "errors": [r["error"] for r in rs if "error" in r],
                "tokens_per_second": [r["tokens_per_second"] for r in ok],
                "total_tokens_per_second": [r["total_tokens_per_second"] for r in ok],
                "tokens_per_cpu_second": [r["tokens_per_cpu_second"] for r in ok],
                "precompute_s": [r["precompute_window_s"] for r in ok],
                "peak_rss_mb": [r["peak_rss_mb"] for r in ok],
                "first_loss": [r["first_loss"] for r in ok],
                "last_loss": [r["last_loss"] for r in ok],
                "median_tokens_per_second": med([r["tokens_per_second"] for r in ok]),
                "median_total_tokens_per_second": med([r["total_tokens_per_second"] for r in ok]),
                "median_tokens_per_cpu_second": med([r["tokens_per_cpu_second"] for r in ok]),
                "median_peak_rss_mb": med([r["peak_rss_mb"] for r in ok]),
            }
        )
    return rows


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    head = (
        f"{'side':<10} {'setting':<19} {'n':>2} {'tok/s, steps only':>18} {'tok/s incl. precomp.':>20} "
        f"{'tok/CPU-s incl.':>16} {'precompute s':>15} {'peak RSS MB':>18} {'1st loss':>8} {'last loss':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if not r["runs"]:
            print(f"{r['side']:<10} {r['setting']:<19}  failed: {r['errors'][0][-160:]}")
            continue
        print(
            f"{r['side']:<10} {r['setting']:<19} {r['runs']:>2} {spread(r['tokens_per_second']):>18} "
            f"{spread(r['total_tokens_per_second']):>20} {spread(r['tokens_per_cpu_second']):>16} "
            f"{spread(r['precompute_s'], '{:.1f}'):>15} {spread(r['peak_rss_mb']):>18} {med(r['first_loss']):>8.4f} "
            f"{med(r['last_loss']):>9.4f}"
        )


def best(rows: list[dict], side: str) -> dict | None:
    cands = [r for r in rows if r["side"] == side and r["runs"]]
    return max(cands, key=lambda r: r["median_total_tokens_per_second"]) if cands else None


def paired_ratios(results: list[dict], tf_setting: str, trl_setting: str) -> list[float]:
    """tokens/s (incl. precompute) ratios of the two settings' runs of the same repeat (they ran back to back)."""
    by = {}
    for r in results:
        if "error" not in r:
            by.setdefault((r["side"], r["setting"]), []).append(r["total_tokens_per_second"])
    tf, trl = by.get(("tuneforge", tf_setting), []), by.get(("trl", trl_setting), [])
    return [x / y for x, y in zip(tf, trl)]


def losses_agree(results: list[dict]) -> dict:
    """Per-step losses of the first successful run of each side's best setting, side by side."""
    out = {}
    for r in results:
        if "error" not in r and r["side"] not in out:
            out[r["side"]] = r["losses"]
    if len(out) < 2:
        return {}
    tf, trl = out["tuneforge"], out["trl"]
    diffs = [abs(x - y) for x, y in zip(tf, trl) if x is not None and y is not None]
    return {"tuneforge": tf, "trl": trl, "max_abs_diff": max(diffs) if diffs else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=1, help="optimizer steps before timing starts (at least 1)")
    ap.add_argument("--batch-size", type=int, default=2, help="pairs per step")
    ap.add_argument("--pairs", type=int, default=0, help="pairs to read (default: (warmup + steps) x batch size)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--max-prompt-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tuneforge", default="precompute", help=f"settings, of {', '.join(TF_SETTINGS)}")
    ap.add_argument("--trl", default="precompute-fp32", help=f"settings, of {', '.join(TRL_SETTINGS)}")
    ap.add_argument("--sweep", action="store_true", help="first train every setting once, --sweep-steps steps")
    ap.add_argument("--sweep-only", action="store_true", help="only the sweep")
    ap.add_argument("--sweep-steps", type=int, default=2)
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--keep", help="keep the run directories and logs in this directory")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.warmup < 1:
        ap.error("--warmup: at least 1 (timing starts at the end of a step)")

    if a.worker:
        spec = json.load(open(a.worker[0]))
        res = (worker_tuneforge if spec["side"] == "tuneforge" else worker_trl)(spec)
        with open(a.worker[1], "w") as fh:
            json.dump(res, fh)
        return

    workdir = a.keep or tempfile.mkdtemp(prefix="pref-speed-")
    os.makedirs(workdir, exist_ok=True)
    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at start; work dir {workdir}",
        flush=True,
    )
    prep = prepare_pairs(a, workdir)
    print(
        f"{len(prep['keys'])} pairs (template {prep['template']}; {prep['truncated']} with an answer cut at "
        f"{a.max_length}), {sum(prep['tokens'])} real tokens, {a.batch_size} pairs/step, {a.warmup} warm-up + "
        f"{a.steps} timed steps",
        flush=True,
    )
    out: dict = {"args": vars(a), "pairs": len(prep["keys"]), "truncated_pairs": prep["truncated"]}
    counter = iter(range(10_000))
    order: list[int] | None = None

    def one(side, setting, args):
        nonlocal order
        tag = f"{next(counter):02d}-{side}-{setting}"
        # TRL trains on tuneforge's batches, taken from the first tuneforge run (file order if there is none)
        r = run_worker(side, setting, args, prep, order or list(range(len(prep["keys"]))), workdir, tag)
        if side == "tuneforge" and "error" not in r:
            flat = [i for b in r["batches_pairs"] for i in b]
            if order is None:
                order = flat
            elif flat[: len(order)] != order[: len(flat)]:
                r["note"] = "batch order differs from the first tuneforge run"
        msg = r.get("error") or (
            f"{r['tokens_per_second']:.0f} tok/s ({r['total_tokens_per_second']:.0f} incl. precompute "
            f"{r['precompute_window_s']:.1f}s), RSS {r['peak_rss_mb']:.0f} MB, loss {r['first_loss']:.4f} -> "
            f"{r['last_loss']:.4f}, wall {r['wall_s']:.0f}s"
        )
        print(f"  [{tag}] {msg}  (load {os.getloadavg()[0]:.2f})", flush=True)
        return r

    if a.sweep or a.sweep_only:
        sa = argparse.Namespace(**{**vars(a), "steps": a.sweep_steps, "warmup": 1})
        sa.pairs = 0
        os.makedirs(os.path.join(workdir, "sweep"), exist_ok=True)
        sprep = prepare_pairs(sa, os.path.join(workdir, "sweep"))
        saved = prep, order
        prep, order = sprep, None
        sweep = []
        print(f"\nsweep: each setting once, 1 warm-up + {a.sweep_steps} timed steps", flush=True)
        for s in SWEEP_TF:
            sweep.append(one("tuneforge", s, sa))
        for s in SWEEP_TRL:
            sweep.append(one("trl", s, sa))
        prep, order = saved
        rows = table(sweep)
        print_table(rows, f"sweep ({a.sweep_steps} timed steps, one run each)")
        out["sweep"] = {"rows": rows, "runs": sweep}
        if a.sweep_only:
            _write(a, out)
            return

    tf_settings = [s for s in a.tuneforge.split(",") if s]
    trl_settings = [s for s in a.trl.split(",") if s]
    print(f"\nmeasured: {a.repeats} repeats, sides alternating", flush=True)
    results = []
    for rep in range(a.repeats):
        for k in range(max(len(tf_settings), len(trl_settings))):
            pair = []
            if k < len(tf_settings):
                pair.append(("tuneforge", tf_settings[k]))
            if k < len(trl_settings):
                pair.append(("trl", trl_settings[k]))
            if rep % 2 and order is not None:
                pair.reverse()
            for side, setting in pair:
                results.append(one(side, setting, a))
    rows = table(results)
    print_table(
        rows,
        f"{a.steps} timed steps x {a.batch_size} pairs after {a.warmup} warm-up steps; median (min-max) "
        f"of {a.repeats} runs; machine shared with other jobs",
    )
    out["rows"], out["runs"] = rows, results
    tb, rb = best(rows, "tuneforge"), best(rows, "trl")
    if tb and rb:
        ratio = tb["median_total_tokens_per_second"] / rb["median_total_tokens_per_second"]
        ratio_steps = tb["median_tokens_per_second"] / rb["median_tokens_per_second"]
        rss = tb["median_peak_rss_mb"] / rb["median_peak_rss_mb"]
        print(
            f"\nbest tuneforge ({tb['setting']}) / best TRL ({rb['setting']}): tokens/s {ratio:.2f}x incl. precompute "
            f"({ratio_steps:.2f}x training steps only; target >= 1.3x), peak RSS {rss:.2f}x (target <= 1.0x)"
        )
        print(
            "ratios tuneforge / TRL of the medians (paired: median (min-max) of the ratios within each repeat, "
            "whose runs ran back to back):"
        )
        ratios = []
        for tf in [r for r in rows if r["side"] == "tuneforge" and r["runs"]]:
            for tr in [r for r in rows if r["side"] == "trl" and r["runs"]]:
                paired = paired_ratios(results, tf["setting"], tr["setting"])
                q = {
                    "tuneforge": tf["setting"],
                    "trl": tr["setting"],
                    "tokens_per_second": tf["median_total_tokens_per_second"] / tr["median_total_tokens_per_second"],
                    "tokens_per_second_steps_only": tf["median_tokens_per_second"] / tr["median_tokens_per_second"],
                    "tokens_per_cpu_second": tf["median_tokens_per_cpu_second"] / tr["median_tokens_per_cpu_second"],
                    "peak_rss": tf["median_peak_rss_mb"] / tr["median_peak_rss_mb"],
                    "paired_tokens_per_second": paired,
                }
                ratios.append(q)
                print(
                    f"  tuneforge {tf['setting']:<11} / TRL {tr['setting']:<16}: tok/s {q['tokens_per_second']:.2f}x "
                    f"incl. precompute (paired {spread(paired, '{:.2f}')}), steps only "
                    f"{q['tokens_per_second_steps_only']:.2f}x, tok/CPU-s {q['tokens_per_cpu_second']:.2f}x, "
                    f"peak RSS {q['peak_rss']:.2f}x"
                )
        out["all_ratios"] = ratios
        out["ratios"] = {
            "best_tuneforge": tb["setting"],
            "best_trl": rb["setting"],
            "tokens_per_second": ratio,
            "tokens_per_second_steps_only": ratio_steps,
            "peak_rss": rss,
        }
    agree = losses_agree(results)
    if agree:
        fmt = lambda xs: " ".join("-" if x is None else f"{x:.4f}" for x in xs)  # noqa: E731
        print(
            f"\nper-step loss, first runs (ln 2 = {math.log(2):.4f}):\n  tuneforge {fmt(agree['tuneforge'])}\n"
            f"  TRL       {fmt(agree['trl'])}\n  max |difference| {agree['max_abs_diff']:.2e}"
        )
        out["losses"] = agree
    fp = {(r["side"], str(r.get("lora_fingerprint"))) for r in results if "error" not in r}
    print(f"LoRA A initialisation (count, sum |A|): {sorted(fp)}")
    own = [(r["side"], r["timed_tokens"], r["timed_tokens_own"]) for r in results if "error" not in r][:2]
    print(f"timed tokens (tuneforge's count used for both; each side's own attention-mask count): {own}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    _write(a, out)


def _write(a, out):
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
