"""Distillation losses (issue 18): classification_kd_loss against hand computations; token_kd_loss (chunked, from
hidden states) against logits_kd_loss (full logits, autograd) in value and gradients for every divergence and
several chunk sizes; masking, the causal shift, the degenerate cases, and the full logits never being allocated."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernel_helpers import LargestTensor
from tuneforge.kernels.distill import classification_kd_loss, logits_kd_loss, token_kd_loss

pytestmark = pytest.mark.unit

# ---- classification_kd_loss ----------------------------------------------------------------------------------
# 2 rows x 3 classes; row 0 has gold label 1, row 1 is unlabelled (only the teacher labels it)
S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
T_ = [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
Y = [1, -100]


def np_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def hand_kd(s, t, y, temp, alpha):
    """alpha * T^2 * mean_rows sum_c p_t log(p_t / p_s) + (1 - alpha) * mean_labelled -log softmax(s)[y]."""
    s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
    pt, ps = np_softmax(t / temp), np_softmax(s / temp)
    kl_rows = [sum(pt[r, c] * math.log(pt[r, c] / ps[r, c]) for c in range(3) if pt[r, c] > 0) for r in range(len(s))]
    soft = temp * temp * float(np.mean(kl_rows))
    lab = [r for r, yy in enumerate(y) if yy != -100]
    ce = float(np.mean([-math.log(np_softmax(s)[r, y[r]]) for r in lab])) if lab else 0.0
    return alpha * soft + (1 - alpha) * ce


def kd(s, t, y, temp, alpha, dtype=torch.float64):
    return classification_kd_loss(
        torch.tensor(s, dtype=dtype), torch.tensor(t, dtype=dtype), torch.tensor(y), temp, alpha
    )


@pytest.mark.parametrize("temp", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
def test_classification_matches_hand_computation(temp, alpha):
    out = kd(S, T_, Y, temp, alpha)
    assert out.dtype == torch.float64
    assert out.item() == pytest.approx(hand_kd(S, T_, Y, temp, alpha), rel=1e-12, abs=1e-12)


def test_classification_written_out_numbers():
    # T=1: p_t row0 = softmax(2, 1, 0) = (0.66524, 0.24473, 0.09003)
    #      p_s row0 = softmax(1, 2, 0.5) = (0.23122, 0.62853, 0.14024)
    # KL row0 = 0.43226002, KL row1 = 1.30060495 -> soft = mean = 0.86643248; CE row0 = -log 0.62853 = 0.46436878
    assert kd(S, T_, Y, 1.0, 1.0).item() == pytest.approx(0.8664324831105255, abs=1e-12)
    assert kd(S, T_, Y, 1.0, 0.0).item() == pytest.approx(0.46436878410794485, abs=1e-12)
    mixed = 0.7 * 0.8664324831105255 + 0.3 * 0.46436878410794485  # = 0.7458133734097513
    assert kd(S, T_, Y, 1.0, 0.7).item() == pytest.approx(mixed, abs=1e-12)
    # T=4: KL rows (0.02469472, 0.09462030), times T^2 = 16 -> soft 0.95452015
    assert kd(S, T_, Y, 4.0, 1.0).item() == pytest.approx(0.9545201454283732, abs=1e-12)
    assert kd(S, T_, Y, 4.0, 0.7).item() == pytest.approx(0.8074747370322447, abs=1e-12)


def test_classification_alpha0_is_plain_cross_entropy_on_labelled_rows_exactly():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, requires_grad=True)
    t = torch.randn(6, 5, generator=g, dtype=torch.float16)
    y = torch.tensor([0, -100, 4, 2, -100, 1])
    out = classification_kd_loss(s, t, y, 2.0, 0.0)
    ref = F.cross_entropy(s, y, ignore_index=-100)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert torch.equal(torch.autograd.grad(out, s)[0], torch.autograd.grad(ref, s)[0])


def test_classification_alpha1_ignores_labels_and_teacher_dtype_is_cast():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 3, generator=g, dtype=torch.float32)
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    a = classification_kd_loss(s, t, torch.tensor([0, 1, 2, 0]), 3.0, 1.0)
    b = classification_kd_loss(s, t, torch.tensor([-100] * 4), 3.0, 1.0)
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert a.item() == pytest.approx(hand_kd(s.tolist(), t.tolist(), [-100] * 4, 3.0, 1.0), rel=1e-5)
    with torch.no_grad():  # a float16 cache gives the float16-rounded teacher, computed in float32
        h = classification_kd_loss(s, t.half(), torch.tensor([0, 1, 2, 0]), 3.0, 1.0)
    assert h.dtype == torch.float32
    assert h.item() == pytest.approx(hand_kd(s.tolist(), t.half().float().tolist(), [-100] * 4, 3.0, 1.0), rel=1e-5)


def test_classification_all_rows_unlabelled():
    s = torch.tensor(S, dtype=torch.float64, requires_grad=True)
    y = [-100, -100]
    out = classification_kd_loss(s, torch.tensor(T_, dtype=torch.float64), torch.tensor(y), 2.0, 0.7)
    assert out.item() == pytest.approx(hand_kd(S, T_, y, 2.0, 0.7), rel=1e-12)  # = 0.7 * soft, the CE is 0
    out.backward()
    assert torch.isfinite(s.grad).all()
    zero = classification_kd_loss(s, torch.tensor(T_, dtype=torch.float64), torch.tensor(y), 2.0, 0.0)
    assert zero.item() == 0.0 and zero.requires_grad
    (g,) = torch.autograd.grad(zero, s)
    assert torch.equal(g, torch.zeros_like(g))


def test_classification_teacher_probability_exactly_zero():
    # teacher row 0 gives class 2 probability exactly 0 (-inf logit): its term is 0 * log 0 = 0, not NaN
    t = [[2.0, 1.0, -math.inf], [1.0, 1.0, 1.0]]
    s = torch.tensor(S, dtype=torch.float64, requires_grad=True)
    for temp in (1.0, 4.0):
        out = classification_kd_loss(s, torch.tensor(t, dtype=torch.float64), torch.tensor(Y), temp, 0.7)
        e = np.exp([2.0 / temp, 1.0 / temp])
        pt0 = e / e.sum()  # (p, 1 - p, 0)
        pt1 = np.full(3, 1 / 3)  # uniform
        ps = np_softmax(np.array(S) / temp)
        kl0 = sum(pt0[c] * math.log(pt0[c] / ps[0, c]) for c in (0, 1))  # class 2 contributes 0
        kl1 = sum(pt1[c] * math.log(pt1[c] / ps[1, c]) for c in range(3))
        ce = -math.log(np_softmax(np.array(S))[0, 1])
        expected = 0.7 * temp**2 * (kl0 + kl1) / 2 + 0.3 * ce
        assert out.item() == pytest.approx(expected, rel=1e-12)
        (g,) = torch.autograd.grad(out, s)
        assert torch.isfinite(g).all()


@pytest.mark.parametrize(
    "alpha,temp", [(-0.1, 1.0), (1.1, 1.0), (0.5, 0.0), (0.5, -2.0), (float("nan"), 1.0), (0.5, float("nan"))]
)
def test_classification_rejects_bad_alpha_and_temperature(alpha, temp):
    with pytest.raises(ValueError):
        kd(S, T_, Y, temp, alpha)


def test_classification_rejects_bad_shapes_and_labels():
    s, t = torch.tensor(S), torch.tensor(T_)
    with pytest.raises(ValueError):
        classification_kd_loss(s, t[:, :2], torch.tensor(Y), 1.0, 0.5)
    with pytest.raises(ValueError):
        classification_kd_loss(s, t, torch.tensor([1]), 1.0, 0.5)
    with pytest.raises(ValueError):
        classification_kd_loss(s, t, torch.tensor([3, -100]), 1.0, 0.5)
    with pytest.raises(ValueError):
        classification_kd_loss(s, t, torch.tensor([-1, 0]), 1.0, 0.5)


# ---- token_kd_loss vs logits_kd_loss -------------------------------------------------------------------------
B, SEQ, HS, HT, V = 2, 7, 8, 12, 29


def lm_data(seed=0, dtype=torch.float32, bias=False):
    g = torch.Generator().manual_seed(seed)
    sh = torch.randn(B, SEQ, HS, generator=g, dtype=dtype).requires_grad_()
    sw = (torch.randn(V, HS, generator=g, dtype=dtype) * 0.5).requires_grad_()
    th = torch.randn(B, SEQ, HT, generator=g, dtype=dtype)
    tw = torch.randn(V, HT, generator=g, dtype=dtype) * 0.5
    labels = torch.randint(0, V, (B, SEQ), generator=g)
    labels[0, 0] = labels[0, 3] = labels[1, 5] = labels[1, 6] = -100  # 12 positions, 9 trained after the shift
    sb = (torch.randn(V, generator=g, dtype=dtype) * 0.3).requires_grad_() if bias else None
    tb = torch.randn(V, generator=g, dtype=dtype) * 0.3 if bias else None
    return sh, sw, th, tw, labels, sb, tb


def full_logits(h, w, b=None):
    z = h @ w.t()
    return z + b if b is not None else z


DIVS = [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.2)]


@pytest.mark.parametrize("divergence,beta", DIVS)
@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_token_kd_matches_full_logits_reference(divergence, beta, chunk):
    sh, sw, th, tw, y, _, _ = lm_data()
    kw = dict(divergence=divergence, temperature=2.0, beta=beta)
    ref = logits_kd_loss(full_logits(sh, sw), full_logits(th, tw), y, **kw)
    rh, rw = torch.autograd.grad(ref * 2.5, (sh, sw))  # upstream gradient != 1 (loss scaling)
    out = token_kd_loss(sh, sw, th, tw, y, chunk_size=chunk, **kw)
    oh, ow = torch.autograd.grad(out * 2.5, (sh, sw))
    assert out.dtype == torch.float32 and ref.item() > 0
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(oh, rh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ow, rw, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("divergence,beta", DIVS)
def test_token_kd_fp64_with_biases_and_temperature(divergence, beta):
    sh, sw, th, tw, y, sb, tb = lm_data(seed=3, dtype=torch.float64, bias=True)
    kw = dict(divergence=divergence, temperature=0.7, beta=beta)
    ref = logits_kd_loss(full_logits(sh, sw, sb), full_logits(th, tw, tb), y, **kw)
    rg = torch.autograd.grad(ref, (sh, sw, sb))
    out = token_kd_loss(sh, sw, th, tw, y, chunk_size=4, student_bias=sb, teacher_bias=tb, **kw)
    og = torch.autograd.grad(out, (sh, sw, sb))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    for a, b in zip(og, rg):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_token_kd_gradcheck_small():
    g = torch.Generator().manual_seed(5)
    sh = torch.randn(1, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    sw = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    th, tw = torch.randn(1, 4, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([[-100, 1, 2, 3]])
    for div in ("forward_kl", "reverse_kl", "jsd"):

        def f(a, b, div=div):
            return token_kd_loss(a, b, th, tw, y, divergence=div, temperature=1.5, beta=0.3, chunk_size=2)

        assert torch.autograd.gradcheck(f, (sh, sw))


def test_masked_positions_are_ignored_and_the_shift_is_causal():
    sh, sw, th, tw, y, _, _ = lm_data()
    out = token_kd_loss(sh, sw, th, tw, y, chunk_size=3)
    # position i is distilled iff labels[:, i + 1] != -100; the last position never is
    untrained = torch.ones(B, SEQ, dtype=torch.bool)
    untrained[:, :-1] = y[:, 1:] == -100
    th2 = th.clone()
    th2[untrained] = torch.randn(int(untrained.sum()), HT) * 10
    y2 = y.clone()
    y2[y2 != -100] = (y2[y2 != -100] + 7) % V  # the label values do not matter, only the mask
    assert torch.equal(token_kd_loss(sh, sw, th2, tw, y2, chunk_size=3), out)
    th3 = th.clone()
    th3[~untrained] += 1.0  # changing a trained position does change it
    assert not torch.equal(token_kd_loss(sh, sw, th3, tw, y, chunk_size=3), out)
    (gh,) = torch.autograd.grad(out, sh)
    assert torch.equal(gh[untrained], torch.zeros_like(gh[untrained]))
    assert (gh[~untrained].abs().sum(-1) > 0).all()


def test_no_trained_position_gives_zero_with_graph():
    sh, sw, th, tw, y, _, _ = lm_data()
    y[:, 1:] = -100  # only position 0's label remains, which nothing predicts
    for div in ("forward_kl", "reverse_kl", "jsd"):
        out = token_kd_loss(sh, sw, th, tw, y, divergence=div)
        assert out.item() == 0.0 and out.requires_grad
        gh, gw = torch.autograd.grad(out, (sh, sw))
        assert torch.equal(gh, torch.zeros_like(gh)) and torch.equal(gw, torch.zeros_like(gw))
        ref = logits_kd_loss(full_logits(sh, sw), full_logits(th, tw), y, divergence=div)
        assert ref.item() == 0.0 and ref.requires_grad


def test_vocab_mismatch_and_other_errors():
    sh, sw, th, tw, y, _, _ = lm_data()
    with pytest.raises(ValueError, match=r"teacher vocabulary size 30 != student vocabulary size 29"):
        token_kd_loss(sh, sw, th, torch.randn(V + 1, HT), y)
    with pytest.raises(ValueError, match="30.*29"):
        logits_kd_loss(torch.randn(B, SEQ, V), torch.randn(B, SEQ, V + 1), y)
    for bad in (
        dict(divergence="kl"),
        dict(temperature=0.0),
        dict(divergence="jsd", beta=0.0),
        dict(divergence="jsd", beta=1.0),
        dict(chunk_size=0),
    ):
        with pytest.raises(ValueError):
            token_kd_loss(sh, sw, th, tw, y, **bad)
    with pytest.raises(ValueError):
        token_kd_loss(sh, sw, th[:, :-1], tw, y)
    with pytest.raises(ValueError):
        token_kd_loss(sh, sw, th, tw, y[:, :-1])


def test_jsd_half_is_symmetric_js_by_hand():
    # identity heads make the hidden states the logits: one trained position (labels[0, 1] set)
    p = np.array([0.5, 0.3, 0.2])  # teacher
    q = np.array([0.1, 0.6, 0.3])  # student
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))  # = 0.0823... nats
    assert js == pytest.approx(0.5 * (np.sum(p * np.log(2 * p / (p + q))) + np.sum(q * np.log(2 * q / (p + q)))))
    eye = torch.eye(3, dtype=torch.float64)
    sh = torch.tensor(np.log(q), dtype=torch.float64).expand(1, 2, 3).clone().requires_grad_()
    th = torch.tensor(np.log(p), dtype=torch.float64).expand(1, 2, 3).clone()
    y = torch.tensor([[-100, 0]])
    out = token_kd_loss(sh, eye, th, eye, y, divergence="jsd", beta=0.5)
    assert out.item() == pytest.approx(js, rel=1e-12)
    swapped = token_kd_loss(th.clone().requires_grad_(), eye, sh.detach(), eye, y, divergence="jsd", beta=0.5)
    assert swapped.item() == pytest.approx(js, rel=1e-12)  # symmetric at beta = 0.5
    # forward/reverse KL on the same pair, by hand, and T^2 scaling at T = 1
    assert token_kd_loss(sh, eye, th, eye, y).item() == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-12)
    assert token_kd_loss(sh, eye, th, eye, y, divergence="reverse_kl").item() == pytest.approx(
        np.sum(q * np.log(q / p)), rel=1e-12
    )
    # generalized JSD, beta = 0.2: m = 0.2 p + 0.8 q
    m2 = 0.2 * p + 0.8 * q
    gjs = 0.2 * np.sum(p * np.log(p / m2)) + 0.8 * np.sum(q * np.log(q / m2))
    assert token_kd_loss(sh, eye, th, eye, y, divergence="jsd", beta=0.2).item() == pytest.approx(gjs, rel=1e-12)


def test_jsd_with_an_exact_zero_on_full_logits():
    # p_t = (0.5, 0.5, 0): the zero contributes nothing to KL(p_t || m); KL(p_s || m) is finite
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    m = (p + q) / 2
    js = 0.5 * np.sum(p[:2] * np.log(p[:2] / m[:2])) + 0.5 * np.sum(q * np.log(q / m))
    s = torch.tensor(np.log(q)).expand(1, 2, 3).clone().requires_grad_()
    t = torch.tensor([math.log(0.5), math.log(0.5), -math.inf]).expand(1, 2, 3).clone()  # log 0 = -inf
    out = logits_kd_loss(s, t, torch.tensor([[0, 0]]), "jsd", 1.0, 0.5)
    assert out.item() == pytest.approx(js, rel=1e-12)
    fwd = logits_kd_loss(s, t, torch.tensor([[0, 0]]), "forward_kl", 1.0)
    assert fwd.item() == pytest.approx(np.sum(p[:2] * np.log(p[:2] / q[:2])), rel=1e-12)
    assert torch.isfinite(torch.autograd.grad(out + fwd, s)[0]).all()


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_identical_distributions_give_zero(divergence):
    sh, sw, _, _, y, _, _ = lm_data()
    out = token_kd_loss(
        sh, sw, sh.detach().clone(), sw.detach().clone(), y, divergence=divergence, temperature=3.0, chunk_size=4
    )
    assert abs(out.item()) < 1e-6
    gh, gw = torch.autograd.grad(out, (sh, sw))
    assert gh.abs().max() < 1e-6 and gw.abs().max() < 1e-6


def test_temperature_squared_scaling_and_num_items():
    sh, sw, th, tw, y, _, _ = lm_data(dtype=torch.float64)
    ls, lt = full_logits(sh, sw), full_logits(th, tw)
    mask = y[:, 1:] != -100
    a = F.log_softmax(ls[:, :-1][mask] / 3.0, -1)
    b = F.log_softmax(lt[:, :-1][mask] / 3.0, -1)
    manual = 9.0 * F.kl_div(a, b, reduction="batchmean", log_target=True)
    out = token_kd_loss(sh, sw, th, tw, y, temperature=3.0, chunk_size=2)
    torch.testing.assert_close(out, manual, atol=1e-12, rtol=1e-12)
    summed = token_kd_loss(sh, sw, th, tw, y, temperature=3.0, num_items_in_batch=torch.tensor(20))
    torch.testing.assert_close(summed, manual * int(mask.sum()) / 20, atol=1e-12, rtol=1e-12)


def test_no_grad_and_frozen_head():
    sh, sw, th, tw, y, _, _ = lm_data()
    sw.requires_grad_(False)
    out = token_kd_loss(sh, sw, th, tw, y, chunk_size=5)
    out.backward()
    assert sw.grad is None and sh.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(token_kd_loss(sh, sw, th, tw, y, chunk_size=5), out.detach())


def test_half_precision_inputs_compute_in_float32():
    sh, sw, th, tw, y, _, _ = lm_data()
    ref = logits_kd_loss(full_logits(sh.bfloat16(), sw.bfloat16()), full_logits(th.half(), tw.half()), y)
    out = token_kd_loss(sh.detach().bfloat16().requires_grad_(), sw.bfloat16(), th.half(), tw.half(), y, chunk_size=3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
def test_full_logits_are_never_allocated(divergence):
    b, seq, h, v = 2, 33, 16, 4000  # 64 trained positions
    sh = torch.randn(b, seq, h, requires_grad=True)
    sw = (torch.randn(v, h) * 0.1).requires_grad_()
    th, tw = torch.randn(b, seq, 24), torch.randn(v, 24) * 0.1
    y = torch.zeros(b, seq, dtype=torch.long)
    logits_bytes = b * (seq - 1) * v * 4
    with LargestTensor() as mode:
        token_kd_loss(sh, sw, th, tw, y, divergence=divergence, chunk_size=8).backward()
    assert mode.largest <= logits_bytes // 4  # one 8-row chunk is 1/8 of the logits; the weight grad 1/8 too
