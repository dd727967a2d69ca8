"""One GRPO training step, as the task's `training_loss(model, inputs)`: the batch's prompts are answered
`num_generations` times each by the policy itself (its own `generate` with the KV cache, all prompts and groups in
one batch), the completions scored by the rewards (data/reward_functions.py), the rewards turned into group-normalised
advantages and the clipped policy loss of kernels/grpo.py computed from per-token log-probs (gathered chunk by chunk
from the hidden states: no batch x length x vocabulary logits).

With `task.num_iterations` N > 1 the sampler hands every batch of prompts N times in a row (`RepeatedBatches`); the
first time generates, the others reuse the completions, with the log-probs of the policy that sampled them as the
importance ratio's denominator. The reference (beta > 0) is the policy with its adapters off, or a frozen copy.

In evaluation (the Trainer's evaluate/predict) each prompt is answered once, greedily, and the outputs are the
rewards of those answers (`grpo_metrics`: mean reward, each reward's mean, and accuracy = the mean of the first
`exact_answer` reward when there is one).

Every training step prints one progress line (generation seconds, the completions' reward and length, and the
previous step's update seconds), and a line every 30 s while a generation runs, so a slow step never looks hung."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuneforge.config.schema import RunConfig
from tuneforge.kernels.grpo import group_advantages, grpo_loss
from tuneforge.models.frozen_cast import frozen_linears_cast
from tuneforge.tasks.preference_loss import model_token_logps
from tuneforge.tasks.preference_reference import Reference, disable_dropout, unwrap

#: seconds between "still generating" lines
HEARTBEAT_SECONDS = 30.0


def _say(line: str) -> None:
    import sys

    print(f"tuneforge: {line}", file=sys.stderr, flush=True)


def per_token_logps(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, entropy: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log p(labels[:, t + 1]) at every position t [B, T] (0 where the label is -100) under `model`, with positions
    counted from each row's first real token (prompts are left-padded, as in generation). `entropy`: also the
    entropy of the model's next-token distribution at the same positions (no gradient; for the log)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    return model_token_logps(model, inputs, labels, entropy=entropy)


@dataclass
class Completions:
    """Sampled (or greedy) completions of a batch of prompts, as rows of prompt + completion."""

    ids: torch.Tensor  # [N, P + C]
    mask: torch.Tensor  # [N, P + C] real tokens
    labels: torch.Tensor  # [N, P + C] completion tokens, -100 elsewhere
    lengths: list[int]  # completion tokens (stop token included)
    truncated: list[bool]  # no stop token within max_new_tokens
    texts: list[str]


class _Heartbeat:
    """A line every HEARTBEAT_SECONDS while a generation runs."""

    def __init__(self, what: str, enabled: bool):
        self.what, self.enabled, self.stop = what, enabled, threading.Event()

    def __enter__(self):
        self.start = time.monotonic()
        if self.enabled:
            threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self):
        while not self.stop.wait(HEARTBEAT_SECONDS):
            _say(f"{self.what}: still generating ({time.monotonic() - self.start:.0f} s)")

    def __exit__(self, *exc):
        self.stop.set()


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    tokenizer,
    stop_ids: list[int],
    max_new_tokens: int,
    *,
    n: int = 1,
    sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    heartbeat: str | None = None,
    autocast: torch.dtype | None = None,
) -> Completions:
    """`n` completions of each left-padded prompt (rows prompt-major: prompt i's completions are rows i*n..i*n+n-1),
    cut after the first stop token; the model is put in eval mode while generating and restored. `autocast`: the
    run's mixed-precision dtype (the Trainer's autocast wraps only the model's forward, not `generate`)."""
    m = unwrap(model)
    was = m.training
    m.eval()
    ids, mask = prompt_ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    kw = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if sample else {"do_sample": False}
    try:
        # under autocast: the frozen base's weights cast once for the whole generation, not once per new token
        device = prompt_ids.device.type
        mixed = torch.autocast(device, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with _Heartbeat(heartbeat or "generation", heartbeat is not None), mixed, frozen_linears_cast(m):
            out = m.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                eos_token_id=list(stop_ids),
                pad_token_id=pad,
                use_cache=True,
                **kw,
            )
    finally:
        m.train(was)
    width = ids.shape[1]
    comp = out[:, width:]
    stops = torch.tensor(list(stop_ids), device=comp.device)
    is_stop = torch.isin(comp, stops)
    has_stop = is_stop.any(-1)
    first = torch.where(
        has_stop, is_stop.float().argmax(-1) + 1, torch.full_like(has_stop, comp.shape[1], dtype=torch.long)
    )
    keep = torch.arange(comp.shape[1], device=comp.device)[None, :] < first[:, None]
    comp = torch.where(keep, comp, torch.full_like(comp, pad))
    full = torch.cat([ids, comp], 1)
    full_mask = torch.cat([mask, keep.long()], 1)
    labels = torch.cat([torch.full_like(ids, -100), torch.where(keep, comp, torch.full_like(comp, -100))], 1)
    texts = tokenizer.batch_decode([c[k] for c, k in zip(comp, keep)], skip_special_tokens=True)
    return Completions(full, full_mask, labels, first.tolist(), (~has_stop).tolist(), texts)


def score(rewards, records: list[dict], index: list[int], texts: list[str], n: int):
    """The RewardScores of `texts` (`n` per row, row-major), the rows' records (prompt and fields) read by index."""
    rows = [records[i] for i in index for _ in range(n)]
    fields: dict[str, list] = {}
    for k in sorted({k for r in rows for k in r if k != "prompt"}):
        fields[k] = [r.get(k) for r in rows]
    return rewards([r["prompt"] for r in rows], texts, fields)


@dataclass
class Rollout:
    key: tuple
    done: Completions
    advantages: torch.Tensor
    old_logps: torch.Tensor | None
    log: dict | None = None  # the generation's figures, logged with its first update
    uses: int = 0


class GRPOStep:
    """`loss(model, inputs) -> (loss, outputs)` of GRPO runs (see the module docstring). `state.records`: every split's
    records ({"prompt": messages, **fields}) in one list, read by the rows' `index`; `rewards`: a RewardSet."""

    def __init__(self, cfg: RunConfig, state, rewards, tokenizer, without_adapters: Callable | None = None):
        self.cfg, self.state, self.rewards, self.tok = cfg, state, rewards, tokenizer
        t = cfg.task
        self.t = t
        self.reference = Reference(cfg, without_adapters) if t.beta > 0 else None
        self.rollout: Rollout | None = None
        self.logs: list[dict] = []
        self._mark: float | None = None  # when the previous step's loss was returned (its update followed)
        self.step = 0
        self._prepared: set[int] = set()
        self._dtype: torch.dtype | None | str = "unresolved"  # generation's autocast dtype, on the first step

    def _autocast_dtype(self, model: nn.Module) -> torch.dtype | None:
        """The dtype the run trains in under autocast (train.precision as resolved for this model), None for fp32."""
        if self._dtype == "unresolved":
            from tuneforge.config.environment import model_width, resolve_precision

            precision = resolve_precision(self.cfg.train.precision, model_width(unwrap(model)))
            self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        return self._dtype

    # ---- rewards ----------------------------------------------------------------------------------------
    def score(self, index: list[int], texts: list[str], n: int):
        return score(self.rewards, self.state.records, index, texts, n)

    # ---- training ---------------------------------------------------------------------------------------
    def _rollout(self, model: nn.Module, inputs: dict, key: tuple) -> Rollout:
        t = self.t
        g = t.num_generations
        start = time.monotonic()
        self.step += 1
        done = generate(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            self.tok,
            self.state.stop_token_ids,
            t.max_new_tokens,
            n=g,
            temperature=t.temperature,
            top_p=t.top_p,
            heartbeat=f"grpo step {self.step}",
            autocast=self._autocast_dtype(model),
        )
        gen_s = time.monotonic() - start
        scores = self.score(list(key), done.texts, g)
        rewards = torch.tensor(scores.total, dtype=torch.float32)
        adv, stats = group_advantages(rewards, g, t.scale_rewards)
        old = None
        if t.num_iterations > 1:
            with torch.no_grad():
                old = per_token_logps(model, done.ids, done.mask, done.labels).detach()
        update = f"; previous update {start - self._mark:.1f} s" if self._mark is not None else ""
        lengths = np.asarray(done.lengths)
        log = {
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "frac_reward_zero_std": float(stats.get("frac_groups_zero_std", 0.0)),
            "completion_length": float(lengths.mean()),
            "completion_length_max": float(lengths.max()),
            "truncated_fraction": float(np.mean(done.truncated)),
            "generation_seconds": gen_s,
        }
        for name, values in scores.per_reward.items():
            log[f"rewards/{name}"] = float(np.mean(values))
        for name, count in scores.errors.items():
            if count:
                log[f"reward_errors/{name}"] = float(count)
        _say(
            f"grpo step {self.step}: {len(done.texts)} completions in {gen_s:.1f} s, reward {log['reward']:.3f} "
            f"(std {log['reward_std']:.3f}), length {log['completion_length']:.0f} tokens, "
            f"{log['truncated_fraction']:.0%} cut{update}"
        )
        return Rollout(key, done, adv, old, log=log)

    def __call__(self, model: nn.Module, inputs: dict):
        if id(model) not in self._prepared:
            disable_dropout(model)
            self._prepared.add(id(model))
        if not model.training:
            return self.evaluate(model, inputs)
        key = tuple(int(i) for i in inputs["index"].tolist())
        r = self.rollout
        if r is None or r.key != key or r.uses >= self.t.num_iterations:
            r = self.rollout = self._rollout(model, inputs, key)
        r.uses += 1
        d = r.done
        device = next(model.parameters()).device
        ids, mask, labels = d.ids.to(device), d.mask.to(device), d.labels.to(device)
        logps, entropy = per_token_logps(model, ids, mask, labels, entropy=True)
        cmask = torch.nn.functional.pad(labels[:, 1:] != -100, (0, 1)).float()
        # the mean entropy of the policy's next-token distribution over every completion token (truncated ones too)
        ent_log = {"entropy": float((entropy * cmask).sum() / cmask.sum().clamp(min=1))}
        if self.t.mask_truncated:
            cmask = cmask * (~torch.tensor(d.truncated, device=device)).float()[:, None]
        ref = None
        if self.reference is not None:
            with torch.no_grad(), self.reference(unwrap(model)) as ref_model:
                ref = per_token_logps(ref_model, ids, mask, labels)
        t = self.t
        out = grpo_loss(
            logps,
            None if r.old_logps is None else r.old_logps.to(device),
            ref,
            r.advantages.to(device),
            cmask,
            loss_type=t.loss_type,
            beta=t.beta,
            epsilon_low=t.epsilon,
            epsilon_high=t.epsilon_high,
            max_completion_length=t.max_new_tokens,
        )
        metrics = {k: float(v) for k, v in out.metrics.items()}
        self.logs.append({**(r.log if r.uses == 1 else {}), **metrics, **ent_log})
        self._mark = time.monotonic()
        return out.loss, {}

    def pop_logs(self) -> dict[str, float]:
        """The mean of each metric over the steps since the last call (the Trainer's logging steps)."""
        logs, self.logs = self.logs, []
        keys = {k for entry in logs for k in entry}
        return {k: float(np.mean([e[k] for e in logs if k in e])) for k in sorted(keys)}

    # ---- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, inputs: dict):
        index = [int(i) for i in inputs["index"].tolist()]
        done = generate(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            self.tok,
            self.state.stop_token_ids,
            self.t.max_new_tokens,
            sample=False,
        )
        scores = self.score(index, done.texts, 1)
        total = torch.tensor(scores.total, dtype=torch.float32)
        outputs = {"reward": total}
        for name in self.rewards.names:
            outputs[f"rewards/{name}"] = torch.tensor(scores.per_reward[name], dtype=torch.float32)
        return -total.mean(), outputs


def grpo_metrics(names: list[str], accuracy_reward: str | None):
    """compute_metrics of GRPO runs: the predictions are (reward, each reward's scores) per held-out prompt."""

    def fn(eval_pred) -> dict[str, float]:
        preds = eval_pred.predictions
        arrays = [np.asarray(p, dtype=np.float64).reshape(-1) for p in preds]
        out = {"reward": float(arrays[0].mean())}
        for name, a in zip(names, arrays[1:]):
            out[f"reward_{name}"] = float(a.mean())
        if accuracy_reward is not None:
            out["accuracy"] = out[f"reward_{accuracy_reward}"]
        return out

    return fn
