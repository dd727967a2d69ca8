"""SFT training throughput on CPU: tuneforge vs TRL's SFTTrainer at its best CPU setting (and a hand-written
transformers + PEFT loop), on the same model (SmolLM2-135M-Instruct), data (builtin:identity with the same
system prompt and variables), LoRA config (r 16, alpha 32, dropout 0, all-linear), learning rate, number of
passes over the data and seed.

Rows, each run in its own process (so its peak RSS is its own), timed on training alone (model loading,
tokenization and evaluation excluded; from the trainer's `on_train_begin` to `on_train_end` for both tuneforge and
TRL (TRL's whole `trainer.train()` call, a little longer, is in its JSON as train_call_seconds), the whole
hand-written loop for `padded-loop`):
  tuneforge        `train.precision: auto` (bf16 autocast on a CPU with bf16 units, AVX512-BF16 / AMX), packing on
                   (rows of up to --max-length tokens, batch size --batch-size / 4 rows), loss on assistant turns
  tuneforge-fp32   the same with `train.precision: fp32`
  trl-best         TRL SFTTrainer, SFTConfig(packing=True, packing_strategy="bfd": best-fit-decreasing packing with
                   padding-free batches, one flattened sequence per step with per-example position ids),
                   assistant_only_loss=True (the model's ChatML template with `{% generation %}` markers around each
                   assistant reply and its <|im_end|>, exactly what tuneforge trains on), bf16=True + use_cpu=True
                   where the CPU has bf16 units, activation_checkpointing=False (TRL's default is on, slower), the
                   same packed batch size as tuneforge, weight decay 0.01 and no warmup like tuneforge
  trl-fp32         the same in fp32
  padded-loop      the common recipe: apply_chat_template per conversation, loss on the whole sequence minus
                   padding, batches of --batch-size padded to their longest example, a hand-written AdamW loop, fp32

All rows count the same thing: real (non-padding) tokens of the training examples processed per second of
training. tuneforge: the packed train set's tokens x epochs done (its own efficiency numbers); TRL: the tokens of
the train set it built (`trainer.train_dataset`, input_ids) x epochs done; padded-loop: the unpadded tokens of its
batches. Also the first and last logged training loss (the mean over each --logging-steps window; padded-loop's
is over all tokens, the others' over assistant tokens only, so compare it only among tuneforge and TRL) and peak
RSS. Medians of tokens/s over seeds, mean ± sd of the losses; ratios tuneforge / trl-best (target >= 2x),
tuneforge / trl-fp32, tuneforge-fp32 / trl-fp32 and tuneforge / padded-loop; the last line is JSON.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/cpu_sft.py [--epochs 1] [--batch-size 8] [--max-length 256]
        [--lr 1e-3] [--logging-steps 5] [--seeds 42] [--rows tuneforge,tuneforge-fp32,trl-best,trl-fp32,padded-loop]

One row alone, in this process (what the above runs per row and seed): `--row NAME [--seed 42] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "builtin:smollm2-135m-instruct"
VARIABLES = {"name": "Forge", "author": "the Tuneforge team"}
SYSTEM = "You are a helpful AI assistant."
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
ROWS = ("tuneforge", "tuneforge-fp32", "trl-best", "trl-fp32", "padded-loop")
MARK = "CPU_SFT_ROW "  # the child's result line on stdout


def conversations():
    from tuneforge.data.sft_formats import parse_records
    from tuneforge.data.sources import read_table
    from tuneforge.data.templates import fill_variables

    _, recs = parse_records(read_table("builtin:identity"), "messages", "builtin:identity")
    return [[{**m, "content": fill_variables(m["content"], VARIABLES, "x")} for m in c] for c in recs]


def logged_losses(history: list[dict]) -> dict:
    """First and last `loss` of a trainer's log history (each the mean over a logging window)."""
    losses = [h["loss"] for h in history if "loss" in h]
    return {"loss_first": losses[0] if losses else None, "loss_final": losses[-1] if losses else None}


def train_clock():
    """A TrainerCallback timing on_train_begin -> on_train_end: the window tuneforge's EfficiencyCallback times."""
    from transformers import TrainerCallback

    class TrainClock(TrainerCallback):
        seconds = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.t0

    return TrainClock()


def peer(epochs: float, batch_size: int, max_length: int, lr: float, seed: int, logging_steps: int) -> dict:
    """The common recipe: apply_chat_template per conversation, loss on the whole sequence minus padding,
    batches padded to their longest example, a hand-written AdamW loop over a PEFT LoRA model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models.loader import resolve_model

    path = resolve_model(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    convs = [[{"role": "system", "content": SYSTEM}] + c for c in conversations()]
    enc = [tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"][:max_length] for c in convs]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear")
    )
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    order = list(range(len(enc)))
    rng = random.Random(seed)
    real = padded = 0
    n_batches = int(round(epochs * len(enc) / batch_size))
    batches = []
    while len(batches) < n_batches:
        rng.shuffle(order)
        batches += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    losses = []
    t0 = time.perf_counter()
    for idx in batches[:n_batches]:
        rows = [enc[i] for i in idx]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.as_tensor(r)
            mask[k, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
        real += int(mask.sum())
        padded += ids.numel()
    secs = time.perf_counter() - t0
    # logged like a Trainer: the mean over each complete window of logging_steps steps
    windows = [losses[i : i + logging_steps] for i in range(0, len(losses) - logging_steps + 1, logging_steps)]
    logged = [{"loss": float(torch.stack(w).mean())} for w in windows]
    return {
        "tokens": real,
        "seconds": round(secs, 3),
        "tokens_per_second": round(real / secs, 1),
        "padding_fraction": round(1 - real / padded, 4),
        "steps": n_batches,
        "precision": "fp32",
        "loss_on": "all tokens",
        **logged_losses(logged),
    }


def ours(
    epochs: float, batch_size: int, max_length: int, lr: float, seed: int, logging_steps: int, precision: str, out: str
) -> dict:
    """tuneforge's one training path with packing: rows of up to max_length tokens, batch size scaled so a
    step sees about as many examples as the peer's."""
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    raw = {
        "model": {"name": MODEL},
        "data": {
            "train": "builtin:identity",
            "format": "messages",
            "variables": VARIABLES,
            "system_prompt": SYSTEM,
            "max_length": max_length,
            "packing": True,
            "split": {"validation": 0.0, "test": 0.0},
        },
        "task": {"type": "causal_lm", "report_prompts": 0, "compare_base": False},
        "method": LORA,
        "train": {
            "epochs": epochs,
            "batch_size": packed_batch_size(batch_size),
            "learning_rate": lr,
            "seed": seed,
            "eval_strategy": "no",
            "report_to": "none",
            "logging_steps": logging_steps,
            "warmup_ratio": 0.0,
            "precision": precision,
        },
        "output": {"dir": out, "overwrite": True},
    }
    res = train(load_config(raw=raw))
    eff = res.efficiency
    # real tokens = every example's tokens once per epoch (packed rows carry no padding of their own)
    info = json.loads((res.run_dir / "eval" / "metrics.json").read_text())["data"]
    packing = info["packing"]
    history = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    from tuneforge.models.loader import load_tokenizer, resolve_model
    from tuneforge.tasks.causal_lm import CausalLMTask

    task = CausalLMTask(load_config(raw=raw))
    prepared = task.prepare(load_tokenizer(resolve_model(MODEL)))
    tokens = int(sum(prepared.train["length"]) * eff["epochs"])
    return {
        "tokens": tokens,
        "seconds": eff["train_seconds"],
        "tokens_per_second": round(tokens / eff["train_seconds"], 1),
        "padding_fraction": packing["padding_fraction_packed"],
        "steps": eff["global_steps"],
        "rows": packing["rows"],
        "examples": packing["examples"],
        "precision": eff["precision"],
        "loss_on": "assistant turns",
        **logged_losses(history),
    }


def packed_batch_size(batch_size: int) -> int:
    """Packed rows per step (tuneforge and TRL): a row of max_length tokens holds about 4 examples here."""
    return max(1, batch_size // 4)


def assistant_masked_template(chat_template) -> str | None:
    """The model's ChatML template with `{% generation %}` around each assistant reply and its <|im_end|> (what
    tuneforge trains on), rendering the same text; None where the template is not the one expected."""
    turn = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    if not isinstance(chat_template, str) or chat_template.count(turn) != 1:
        return None
    masked = (
        "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}" + turn + "{% endif %}"
    )
    return chat_template.replace(turn, masked)


def trl_row(
    epochs: float, batch_size: int, max_length: int, lr: float, seed: int, logging_steps: int, bf16: bool, out: str
) -> dict:
    """TRL's SFTTrainer at its best CPU setting: BFD packing with padding-free batches, assistant-only loss, bf16
    autocast where the CPU has bf16 units (`bf16`), no gradient checkpointing."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tuneforge.config.environment import cpu_bf16
    from tuneforge.models.loader import resolve_model

    path = resolve_model(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    convs = [[{"role": "system", "content": SYSTEM}] + c for c in conversations()]
    template = assistant_masked_template(tok.chat_template)
    if template is not None and tok.apply_chat_template(convs[0], tokenize=False) == tok.apply_chat_template(
        convs[0], tokenize=False, chat_template=template
    ):  # the same text, with the assistant replies marked
        tok.chat_template = template
    else:
        template = None
    data = Dataset.from_dict({"messages": convs})
    use_bf16 = bf16 and cpu_bf16()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=out,
        num_train_epochs=epochs,
        per_device_train_batch_size=packed_batch_size(batch_size),
        learning_rate=lr,
        seed=seed,
        data_seed=seed,
        max_length=max_length,
        packing=True,
        packing_strategy="bfd",  # best-fit decreasing; implies padding-free batches
        padding_free=True,
        assistant_only_loss=template is not None,
        bf16=use_bf16,
        fp16=False,
        use_cpu=True,
        activation_checkpointing=False,
        weight_decay=0.01,
        warmup_steps=0,
        lr_scheduler_type="linear",
        logging_steps=logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    clock = train_clock()
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora, callbacks=[clock]
    )
    t0 = time.perf_counter()
    trainer.train()
    call_secs = time.perf_counter() - t0
    epochs_done = float(trainer.state.epoch or 0.0)
    tokens = int(sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * epochs_done)
    return {
        "tokens": tokens,
        "seconds": round(clock.seconds, 3),
        "train_call_seconds": round(call_secs, 3),
        "tokens_per_second": round(tokens / clock.seconds, 1),
        "padding_fraction": 0.0,  # padding-free: one flattened sequence per step, pad_to_multiple_of None on CPU
        "steps": trainer.state.global_step,
        "rows": len(trainer.train_dataset),
        "examples": len(data),
        "epochs": round(epochs_done, 4),
        "precision": "bf16" if use_bf16 else "fp32",
        "loss_on": "assistant turns" if template is not None else "all tokens",
        **logged_losses(trainer.state.log_history),
    }


def run_row(row: str, a, seed: int) -> dict:
    common = (a.epochs, a.batch_size, a.max_length, a.lr, seed, a.logging_steps)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        if row == "tuneforge":
            res = ours(*common, "auto", out)
        elif row == "tuneforge-fp32":
            res = ours(*common, "fp32", out)
        elif row == "trl-best":
            res = trl_row(*common, True, out)
        elif row == "trl-fp32":
            res = trl_row(*common, False, out)
        else:
            res = peer(*common)
    # Linux: kilobytes; this process ran this row alone
    return res | {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_child(row: str, a, seed: int) -> dict:
    """One row in a fresh process (this script with --row NAME --json): its own imports, memory and peak RSS."""
    cmd = [sys.executable, os.path.abspath(__file__), "--row", row, "--json", "--seed", str(seed)]
    for flag in ("epochs", "batch_size", "max_length", "lr", "logging_steps"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(a, flag))]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    found = [line[len(MARK) :] for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not found:
        sys.stdout.write(proc.stdout)
        sys.exit(f"error: row {row} (seed {seed}) failed with exit status {proc.returncode}")
    return json.loads(found[-1])


def summarize(runs: list[dict]) -> dict:
    def spread(key):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if not vals:
            return None, None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

    first, first_sd = spread("loss_first")
    final, final_sd = spread("loss_final")
    return {
        "tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs),
        "seconds": statistics.median(r["seconds"] for r in runs),
        "steps": runs[0]["steps"],
        "tokens": runs[0]["tokens"],
        "padding_fraction": runs[0]["padding_fraction"],
        "precision": runs[0]["precision"],
        "loss_on": runs[0]["loss_on"],
        "loss_first_mean": first,
        "loss_first_sd": first_sd,
        "loss_final_mean": final,
        "loss_final_sd": final_sd,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--logging-steps", type=int, default=5)
    ap.add_argument("--seeds", default="42", help="comma list; every row runs once per seed")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--row", choices=ROWS, help="run this one row here, with --seed (what --rows runs per process)")
    ap.add_argument("--seed", type=int, default=42, help="with --row")
    ap.add_argument("--json", action="store_true", help="with --row: print its result as one marked JSON line")
    a = ap.parse_args()
    if a.row:
        res = run_row(a.row, a, a.seed)
        print(MARK + json.dumps(res) if a.json else json.dumps(res, indent=2), flush=True)
        return

    import torch

    from tuneforge.config.environment import cpu_bf16

    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        sys.exit(f"error: --rows: unknown {', '.join(unknown)} (choose from {', '.join(ROWS)})")
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    results = {r: [] for r in rows}
    for seed in seeds:
        for r in rows:
            res = run_child(r, a, seed)
            results[r].append(res)
            print(f"seed {seed} {r}: {json.dumps(res)}", flush=True)
    summary = {r: summarize(runs) for r, runs in results.items()}

    def loss(v, key):
        mean = v[f"loss_{key}_mean"]
        return "-" if mean is None else f"{mean:.3f} ± {v[f'loss_{key}_sd']:.3f}"

    print(
        f"\nCPU SFT benchmark: SmolLM2-135M-Instruct + LoRA r{LORA['r']}, builtin:identity, {a.epochs:g} epoch(s), "
        f"batch {a.batch_size} (packed: {packed_batch_size(a.batch_size)} rows of <= {a.max_length} tokens), "
        f"lr {a.lr:g}, seeds {','.join(map(str, seeds))}, torch threads {torch.get_num_threads()}, "
        f"CPU bf16 units: {'yes' if cpu_bf16() else 'no'}"
    )
    head = (
        f"{'row':<16}{'tokens/s':>10}{'train s':>9}{'steps':>6}{'tokens':>8}{'pad %':>7}{'prec':>6}"
        f"{'loss first':>17}{'loss final':>17}{'peak RSS MB':>13}  loss on"
    )
    print(head)
    for r, v in summary.items():
        print(
            f"{r:<16}{v['tokens_per_second']:>10.1f}{v['seconds']:>9.2f}{v['steps']:>6}{v['tokens']:>8}"
            f"{100 * v['padding_fraction']:>7.1f}{v['precision']:>6}{loss(v, 'first'):>17}{loss(v, 'final'):>17}"
            f"{v['peak_rss_mb']:>13.0f}  {v['loss_on']}"
        )
    ratios = {}
    for num, den in (
        ("tuneforge", "trl-best"),
        ("tuneforge", "trl-fp32"),
        ("tuneforge-fp32", "trl-fp32"),
        ("tuneforge", "padded-loop"),
    ):
        if num in summary and den in summary:
            ratios[f"{num}/{den}"] = summary[num]["tokens_per_second"] / summary[den]["tokens_per_second"]
    for k, v in ratios.items():
        print(f"tokens/s ratio {k.replace('/', ' / ')}: {v:.2f}x")
    if "tuneforge/trl-best" in ratios:
        print(f"target: tuneforge >= 2x trl-best; measured {ratios['tuneforge/trl-best']:.2f}x")
    args = {k: getattr(a, k) for k in ("epochs", "batch_size", "max_length", "lr", "logging_steps")}
    print(
        json.dumps(
            {
                "args": args | {"seeds": seeds, "cpu_bf16": cpu_bf16(), "torch_threads": torch.get_num_threads()},
                "ratios": {k: round(v, 3) for k, v in ratios.items()},
                "rows": summary,
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
