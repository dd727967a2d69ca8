"""`frozen_linears_cast`: under autocast a frozen base's linear layers compute with copies cast once, with the
results autocast computes anyway; outside autocast, and for trainable or already narrow weights, nothing changes;
the original parameters are back after the block."""

import pytest
import torch

pytestmark = pytest.mark.unit


def _peft_llama(path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(r=4, target_modules="all-linear"))
    for name, p in model.named_parameters():  # a non-zero adapter, so that the LoRA path counts
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model.eval()


def test_under_autocast_the_frozen_layers_compute_as_autocast_would(tiny_wordpiece_llama):
    from tuneforge.models.frozen_cast import frozen_linears_cast

    model = _peft_llama(tiny_wordpiece_llama)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    before = {n: p for n, p in model.named_parameters()}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(input_ids=ids).logits
        with frozen_linears_cast(model) as swapped:
            base = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
            assert base.weight.dtype == torch.bfloat16
            assert model.get_base_model().model.layers[0].self_attn.q_proj.lora_A["default"].weight.dtype == (
                torch.float32  # trainable: left to autocast
            )
            got = model(input_ids=ids).logits
    # every frozen linear of the 2 blocks (7 each) and the output layer
    assert swapped == 15
    assert torch.equal(got, expected)
    assert all(p is before[n] for n, p in model.named_parameters())  # the originals are back


def test_outside_autocast_nothing_changes(tiny_wordpiece_llama):
    from tuneforge.models.frozen_cast import frozen_linears_cast

    model = _peft_llama(tiny_wordpiece_llama)
    with frozen_linears_cast(model) as swapped:
        assert swapped == 0
        assert all(p.dtype == torch.float32 for p in model.parameters())


def test_grpo_generation_runs_under_the_runs_autocast(tiny_wordpiece_llama):
    """The Trainer's autocast wraps the model's forward, not `generate`: GRPO's generation enters it itself."""
    from transformers import AutoTokenizer

    from tuneforge.tasks.grpo_step import generate

    model = _peft_llama(tiny_wordpiece_llama)
    tok = AutoTokenizer.from_pretrained(tiny_wordpiece_llama)
    layer = model.get_base_model().model.layers[1].mlp.down_proj
    for dtype, seen_dtype in ((None, torch.float32), (torch.bfloat16, torch.bfloat16)):
        seen = []
        hook = layer.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.dtype))
        done = generate(
            model, torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long), tok, [0], 4, n=2, autocast=dtype
        )
        hook.remove()
        assert set(seen) == {seen_dtype} and len(done.texts) == 2 and done.ids.shape[0] == 2
    assert all(p.dtype == torch.float32 for p in model.parameters())
