"""One whole DPO step against TRL: LoRA on the tiny Llama, reference = the same model with its adapters off. The
tuneforge batch (built as training builds it) and TRL 1.16's DPOTrainer, given the same token ids, give the same
loss and the same LoRA gradients to 1e-5.

The two encode a pair alike but for one token: TRL's completion is everything after the templated prompt, so with
ChatML it also scores the "\\n" that follows <|im_end|>, which tuneforge (as in SFT) treats as prompt. The test
checks that this is the only difference between TRL's own tokenization and ours, then gives TRL our ids without
that trailing token (in a causal model, tokens after the last scored one change nothing before it)."""

import math

import pytest
import torch

from preference_common import pref_config
from sft_common import write_jsonl

pytestmark = pytest.mark.integration

TOL = 1e-5


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


#: TRL's conversational prompt/chosen/rejected form (tuneforge's `trl` format reads it as is): a system message, a
#: multi-turn prompt and answers of different lengths, so that rows pad differently
PAIRS = [
    {"prompt": _user("who are you"), "chosen": _answer("i am a tiny model"), "rejected": _answer("go away")},
    {
        "prompt": [{"role": "system", "content": "be brief"}, *_user("what is the capital of france")],
        "chosen": _answer("paris"),
        "rejected": _answer("the capital of france is rome, i think"),
    },
    {
        "prompt": [*_user("hello"), *_answer("good morning friend"), *_user("two plus three")],
        "chosen": _answer("two plus three is five"),
        "rejected": _answer("six"),
    },
    {"prompt": _user("colour of the sky"), "chosen": _answer("the sky is blue"), "rejected": _answer("green")},
]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")


def _base(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _lora_model(path: str):
    """The tiny Llama with fixed LoRA adapters (dropout 0) whose B matrices are small random values (seeded), so
    the policy differs from the reference (adapters off)."""
    from peft import get_peft_model

    model = get_peft_model(_base(path), _lora_config())
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _span(labels: list[int]) -> tuple[int, int]:
    """(start, end) of the scored tokens of one encoded side, ids[start:end]: the prompt is ids[:start]."""
    scored = [i for i, y in enumerate(labels) if y != -100]
    start, end = scored[0], scored[-1] + 1
    assert scored == list(range(start, end)), "the scored tokens of a side are one span"
    return start, end


def _lora_grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads), sorted(grads)
    return grads


def test_one_dpo_step_equals_trl(tiny_llama, tmp_path):
    import datasets
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from tuneforge.config import load_config
    from tuneforge.methods import METHODS
    from tuneforge.tasks.base import TASKS
    from tuneforge.tasks.preference_loss import PreferenceLoss

    torch.manual_seed(0)
    # separate validation and test files: no split of train, so train row i is PAIRS[i]
    raw = pref_config(tiny_llama, write_jsonl(tmp_path / "train.jsonl", PAIRS), str(tmp_path / "run"))
    raw["data"]["validation"] = write_jsonl(tmp_path / "val.jsonl", PAIRS[:1])
    raw["data"]["test"] = write_jsonl(tmp_path / "test.jsonl", PAIRS[:1])
    cfg = load_config(raw=raw)
    assert cfg.task.loss == "dpo" and cfg.method.name == "lora"
    tok = AutoTokenizer.from_pretrained(tiny_llama)

    # ---- ours, as training builds it ---------------------------------------------------------------------------
    task = TASKS.get("preference")(cfg)
    prepared = task.prepare(tok)
    rows = [prepared.train[i] for i in range(len(PAIRS))]
    batch = task.collator(tok)(rows)
    policy = _lora_model(tiny_llama)
    initial = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    without_adapters = METHODS.get("lora")(cfg.method).disabled_adapters
    policy.train()
    ours, _ = PreferenceLoss(cfg, without_adapters)(policy, batch)
    ours.backward()
    ours_grads = _lora_grads(policy)

    # ---- TRL 1.16 ----------------------------------------------------------------------------------------------
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.1,  # tuneforge's default dpo beta (preference_config.DEFAULT_BETA)
        loss_type="sigmoid",  # DPO's logistic loss, tuneforge's `dpo` (label_smoothing 0)
        bf16=False,  # DPOConfig defaults to bf16 (autocast); compare in float32 like our run on CPU
        use_cpu=True,
        gradient_checkpointing=False,  # DPOConfig defaults it on; it changes nothing numerically, only costs time
        max_length=None,  # no truncation in TRL's collator: the rows are already cut at data.max_length by us
        precompute_ref_log_probs=False,  # the reference pass runs in the step, adapters off, as ours does
        padding_free=False,  # padded [chosen; rejected] rows like our collator (TRL 1.16 forces this anyway)
        use_weighting=False,  # no WPO weights: each pair counts 1/B in the mean, as in ours
        ld_alpha=None,  # summed completion log-probs, no length desensitisation (ours sums)
        disable_dropout=True,  # as PreferenceLoss does; there is no dropout here anyway
        report_to="none",
    )
    # The base model and a peft_config, no ref_model: TRL wraps it and takes the model with its adapter disabled as
    # the reference. (Handed an already wrapped PeftModel, TRL 1.16 would instead add a "ref" adapter copying the
    # initial one, dpo_trainer.py:666-692: a different reference once B != 0.) Then the same adapter weights as ours.
    trainer = DPOTrainer(
        model=_base(tiny_llama),
        args=args,
        train_dataset=datasets.Dataset.from_list(PAIRS),
        processing_class=tok,
        peft_config=_lora_config(),
    )
    assert trainer.ref_model is None and list(trainer.model.peft_config) == ["default"]
    trl_params = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trl_params.keys() == initial.keys()
    with torch.no_grad():
        for n, p in trl_params.items():
            p.copy_(initial[n])

    # TRL's own tokenization of the same pairs equals ours, except that its completion also holds the tokens after
    # the end-of-turn token (ChatML's "\n"), which ours leaves unscored
    features = []
    for row, tokenized in zip(rows, trainer.train_dataset):
        sides = {}
        for side in ("chosen", "rejected"):
            ids = row[f"{side}_input_ids"]
            start, end = _span(row[f"{side}_labels"])
            assert tokenized["prompt_ids"] == ids[:start], side
            assert tokenized[f"{side}_ids"] == ids[start:], side
            assert tok.decode(ids[end:]) == "\n", tok.decode(ids[end:])
            sides[side] = (ids, start, end)
        (c_ids, c_start, c_end), (r_ids, r_start, r_end) = sides["chosen"], sides["rejected"]
        assert c_start == r_start and c_ids[:c_start] == r_ids[:r_start]
        features.append(
            {"prompt_ids": c_ids[:c_start], "chosen_ids": c_ids[c_start:c_end], "rejected_ids": r_ids[r_start:r_end]}
        )
    trl_batch = trainer.data_collator(features)
    # the same scored tokens: TRL's completion mask is our labels' mask, rows ordered [chosen; rejected] alike
    scored = batch["labels"] != -100
    width = trl_batch["input_ids"].shape[1]
    assert torch.equal(trl_batch["completion_mask"].bool(), scored[:, :width])
    assert not scored[:, width:].any()
    real = trl_batch["attention_mask"].bool()
    assert torch.equal(trl_batch["input_ids"][real], batch["input_ids"][:, :width][real])

    trainer.model.train()
    theirs = trainer.compute_loss(trainer.model, trl_batch)
    theirs.backward()
    trl_grads = _lora_grads(trainer.model)

    print(f"loss: tuneforge {ours.item():.8f}, TRL {theirs.item():.8f}")
    assert abs(ours.item() - theirs.item()) < TOL
    # the adapters move the policy off the reference: the loss is not DPO's log 2 at a zero margin
    assert abs(ours.item() - math.log(2)) > 1e-3
    assert ours_grads.keys() == trl_grads.keys()
    diffs = {n: (ours_grads[n] - trl_grads[n]).abs().max().item() for n in ours_grads}
    worst = max(diffs, key=diffs.get)
    largest = max(g.abs().max().item() for g in trl_grads.values())
    print(f"{len(diffs)} LoRA grads, largest {largest:.2e}; max difference {diffs[worst]:.2e} ({worst})")
    assert diffs[worst] < TOL, (worst, diffs[worst])
    assert largest > 100 * TOL  # the gradients compared are not all ~0
