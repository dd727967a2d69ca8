"""Chunked linear + cross-entropy: loss and gradients against F.cross_entropy(hidden @ W.T), the frozen-weight
(LoRA) case, the Trainer's num_items_in_batch, the full logits never being allocated, and a transformers
causal LM whose training forward goes through it."""

import pytest
import torch
import torch.nn.functional as F

from kernel_helpers import LargestTensor
from tuneforge.kernels.chunked_ce import (
    causal_lm_loss,
    chunked_loss_unsupported,
    default_chunk_rows,
    linear_cross_entropy,
    use_chunked_loss,
)

pytestmark = pytest.mark.unit


def data(n=37, h=16, v=53, dtype=torch.float64, seed=0, w_grad=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, dtype=dtype, generator=g).requires_grad_()
    weight = (torch.randn(v, h, dtype=dtype, generator=g) * 0.5).requires_grad_(w_grad)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::5] = -100
    return hidden, weight, labels


def reference(hidden, weight, labels, **kw):
    return F.cross_entropy(
        (hidden @ weight.t()).float() if hidden.dtype != torch.float64 else hidden @ weight.t(),
        labels,
        ignore_index=-100,
        **kw,
    )


@pytest.mark.parametrize("chunk_rows", [1, 8, 16, None, 1000])
def test_loss_and_grads_match_reference_fp64(chunk_rows):
    h, w, y = data()
    ref = reference(h, w, y)
    gh, gw = torch.autograd.grad(ref * 2.5, (h, w))  # upstream gradient != 1 (loss scaling)
    out = linear_cross_entropy(h, w, y, chunk_rows=chunk_rows)
    ch, cw = torch.autograd.grad(out * 2.5, (h, w))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ch, gh, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cw, gw, rtol=1e-10, atol=1e-12)


def test_gradcheck_small():
    h, w, y = data(n=6, h=3, v=5)
    assert torch.autograd.gradcheck(lambda a, b: linear_cross_entropy(a, b, y, chunk_rows=4), (h, w))


def test_fp32_tight_and_frozen_weight_gets_no_grad():
    h, w, y = data(dtype=torch.float32, w_grad=False)
    ref = reference(h, w, y)
    (gh,) = torch.autograd.grad(ref, (h,))
    out = linear_cross_entropy(h, w, y, chunk_rows=8)
    out.backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h.grad, gh, rtol=1e-5, atol=1e-6)
    assert w.grad is None


def test_num_items_in_batch_divides_the_sum():
    h, w, y = data()
    ref = reference(h, w, y, reduction="sum") / 100
    out = linear_cross_entropy(h, w, y, num_items_in_batch=torch.tensor(100), chunk_rows=8)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, h)[0], torch.autograd.grad(ref, h)[0])


def test_all_ignored_gives_zero_not_nan_and_no_grad_mode():
    h, w, y = data()
    out = linear_cross_entropy(h, w, torch.full_like(y, -100))
    out.backward()
    assert out.item() == 0.0 and torch.count_nonzero(h.grad) == 0
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, y), reference(h, w, y))


def test_bf16_close_to_fp32_reference():
    h, w, y = data(dtype=torch.float32)
    ref = reference(h, w, y)
    out = linear_cross_entropy(h.detach().bfloat16().requires_grad_(), w.bfloat16(), y, chunk_rows=8)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("w_grad", [False, True])
def test_under_cpu_autocast_the_gemms_run_in_bf16(w_grad):
    """As nn.Linear under autocast: the logits (and both gradients' GEMMs) in bf16, the softmax in fp32."""
    h, w, y = data(n=40, h=32, v=64, dtype=torch.float32, w_grad=w_grad)
    hb, wb = h.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_(w_grad)
    ref = F.cross_entropy((hb @ wb.t()).float(), y, ignore_index=-100)
    ref.backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_cross_entropy(h, w, y, chunk_rows=8)
    out.backward()
    assert out.dtype == torch.float32 and h.grad.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(h.grad, hb.grad.float(), rtol=2e-2, atol=2e-3)
    if w_grad:
        assert w.grad.dtype == torch.float32
        torch.testing.assert_close(w.grad, wb.grad.float(), rtol=2e-2, atol=2e-3)


def test_rows_without_a_target_skip_the_output_layer():
    """Only the rows with a label reach the output GEMM (an SFT prompt's tokens never do); theirs get no gradient."""
    h, w, y = data(n=64, h=16, v=53)
    y[:48] = -100  # three quarters of the rows are prompt
    seen = []

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.mm.default and args[1].shape[-2:] == (16, 53):  # hidden x weight.T
                seen.append(args[0].shape[0])
            return func(*args, **(kwargs or {}))

    with Count():
        out = linear_cross_entropy(h, w, y, chunk_rows=1000)
    out.backward()
    assert seen == [int((y != -100).sum())] and seen[0] <= 16
    ref_h = h.detach().clone().requires_grad_()
    reference(ref_h, w.detach(), y).backward()
    torch.testing.assert_close(out, reference(h.detach(), w.detach(), y))
    torch.testing.assert_close(h.grad, ref_h.grad)
    assert not h.grad[:48].any()


def test_causal_shift_matches_transformers_convention():
    h, w, y = data(n=24)
    h3, y3 = h.view(2, 12, -1), y.view(2, 12)
    logits = (h3 @ w.t())[:, :-1]
    ref = F.cross_entropy(logits.reshape(-1, w.shape[0]), y3[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(causal_lm_loss(h3, w, y3, chunk_rows=5), ref)


def test_full_logits_are_never_allocated():
    # a SmolLM-sized head (hidden 576, vocabulary 49152) on 256 tokens
    n, hdim, v = 256, 576, 49152
    hidden = torch.randn(n, hdim, requires_grad=True)
    weight = torch.randn(v, hdim) * 0.02
    labels = torch.randint(0, v, (n,))
    logits_bytes = n * v * 4
    with LargestTensor() as ref_mode:
        reference(hidden, weight, labels).backward()
    with LargestTensor() as mode:
        linear_cross_entropy(hidden, weight, labels).backward()
    assert ref_mode.largest >= logits_bytes
    rows = default_chunk_rows(n, hdim, v)
    assert mode.largest <= rows * v * 4 < logits_bytes / 8, (mode.largest, logits_bytes)


def test_shape_errors():
    h, w, y = data()
    with pytest.raises(ValueError, match="do not match"):
        linear_cross_entropy(h, w, y[:-1])
    with pytest.raises(ValueError, match="does not project"):
        linear_cross_entropy(h, w[:, :-1], y)


# ---- on a transformers causal LM ---------------------------------------------------------------------------
def tiny_llama(tied=True, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).float()


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (3, 11), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0
    labels[2, 8:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("tied", [True, False])
def test_causal_lm_training_forward_matches_the_models_own(tied):
    ref, fused = tiny_llama(tied), tiny_llama(tied)
    assert use_chunked_loss(fused, chunk_rows=7)
    b = batch()
    for m in (ref, fused):
        m.train()
    l_ref = ref(**b, num_items_in_batch=torch.tensor(20)).loss
    out = fused(**b, num_items_in_batch=torch.tensor(20))
    assert out.logits is None
    torch.testing.assert_close(out.loss, l_ref, rtol=1e-5, atol=1e-6)
    l_ref.backward()
    out.loss.backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), fused.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_eval_mode_keeps_logits():
    m = tiny_llama()
    use_chunked_loss(m)
    m.eval()
    with torch.no_grad():
        out = m(**batch())
    assert out.logits is not None and out.logits.shape == (3, 11, 97)


def test_unsupported_output_layer_is_left_alone():
    m = tiny_llama(tied=False)
    m.lm_head = torch.nn.Linear(32, 97, bias=True)
    assert "bias" in chunked_loss_unsupported(m)
    assert use_chunked_loss(m) is False and "forward" not in m.__dict__
