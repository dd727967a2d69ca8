"""Fused LoRA linear: gradients against the formula (gradcheck) and against PEFT's own LoRA layers (full
precision, a bitsandbytes 4-bit base through the dequantize callback, and a whole QLoRA Llama as tuneforge's
qlora method builds it, NF4 and int8); layers it must not touch."""

import copy

import pytest
import torch
from torch import nn

from tuneforge.kernels.lora_fused import fusable, fuse_lora_layers, lora_linear

pytestmark = pytest.mark.unit


def test_gradcheck_against_formula():
    g = torch.Generator().manual_seed(0)

    def mk(*s):
        return torch.randn(*s, dtype=torch.float64, generator=g).requires_grad_()

    x, w, b, a, bb = mk(2, 3, 5), mk(4, 5), mk(4), mk(2, 5), mk(4, 2)

    def f(x, w, b, a, bb):
        return lora_linear(x, w, b, a, bb, 0.7)

    torch.testing.assert_close(f(x, w, b, a, bb), x @ w.t() + b + 0.7 * (x @ a.t()) @ bb.t())
    assert torch.autograd.gradcheck(f, (x, w, b, a, bb))


def test_frozen_base_gets_no_grad():
    x = torch.randn(6, 5, requires_grad=True)
    w, a, b = torch.randn(4, 5), torch.randn(2, 5, requires_grad=True), torch.randn(4, 2, requires_grad=True)
    lora_linear(x, w, None, a, b, 2.0).sum().backward()
    assert w.grad is None and a.grad is not None and b.grad is not None and x.grad is not None


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(16, 24)
        self.o = nn.Linear(24, 8, bias=False)
        self.keep = nn.Linear(8, 8)

    def forward(self, x):
        return self.keep(self.o(torch.relu(self.q(x))))


def peft_pair(**lora_kw):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    kw = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q", "o"], **lora_kw}
    m = get_peft_model(Block(), LoraConfig(**kw))
    for n, p in m.named_parameters():
        if "lora_B" in n:  # B starts at zero; make the update non-trivial
            nn.init.normal_(p)
    return m, copy.deepcopy(m)


def run(m, x):
    x = x.clone().requires_grad_()
    y = m(x)
    (y.square().sum()).backward()
    return y.detach(), x.grad, {n: p.grad for n, p in m.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("rslora", [False, True])
def test_matches_peft_outputs_and_grads(rslora):
    ref, fused = peft_pair(use_rslora=rslora)
    assert fuse_lora_layers(fused) == (2, 2)
    x = torch.randn(3, 7, 16)
    y0, gx0, g0 = run(ref, x)
    y1, gx1, g1 = run(fused, x)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-5)
    assert g0.keys() == g1.keys() and any("lora_A" in k for k in g0)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-5, msg=k)


def test_the_fused_function_is_what_runs(monkeypatch):
    import tuneforge.kernels.lora_fused as lf

    _, fused = peft_pair()
    fuse_lora_layers(fused)
    calls = []
    real = lf.lora_linear
    monkeypatch.setattr(lf, "lora_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    fused(torch.randn(2, 16))
    assert len(calls) == 2
    calls.clear()
    with fused.disable_adapter():  # base-model evaluation goes through PEFT's own forward
        fused(torch.ones(2, 16))
    assert not calls


def test_disabled_adapter_gives_base_outputs():
    ref, fused = peft_pair()
    fuse_lora_layers(fused)
    x = torch.randn(4, 16)
    inner = fused.get_base_model()
    base_out = inner.keep(inner.o.base_layer(torch.relu(inner.q.base_layer(x))))
    with ref.disable_adapter(), fused.disable_adapter():
        torch.testing.assert_close(fused(x), base_out)
        torch.testing.assert_close(ref(x), base_out)
    assert not torch.allclose(fused(x), base_out)


def test_layers_with_dropout_or_dora_keep_peft_forward():
    _, drop = peft_pair(lora_dropout=0.1)
    assert fuse_lora_layers(drop) == (0, 2)
    assert "dropout" in fusable(drop.get_base_model().q)
    _, dora = peft_pair(use_dora=True)
    assert fuse_lora_layers(dora) == (0, 2)


def test_bf16_autocast_output_dtype():
    ref, fused = peft_pair()
    fuse_lora_layers(fused)
    x = torch.randn(3, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y0, y1 = ref(x), fused(x)
    assert y1.dtype == y0.dtype
    torch.testing.assert_close(y1.float(), y0.float(), rtol=5e-2, atol=5e-2)


def test_4bit_base_through_dequantize_matches_peft():
    bnb = pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(64, 32))
    q = nn.Sequential(bnb.nn.Linear4bit(64, 32, bias=True, compute_dtype=torch.float32, quant_type="nf4"))
    q[0].weight = bnb.nn.Params4bit(base[0].weight.data.clone(), requires_grad=False, quant_type="nf4")
    q[0].bias = nn.Parameter(base[0].bias.data.clone(), requires_grad=False)
    q = q.to("cpu")
    m = get_peft_model(q, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["0"]))
    for n, p in m.named_parameters():
        if "lora_B" in n:
            nn.init.normal_(p)
    fused = copy.deepcopy(m)
    assert fuse_lora_layers(fused) == (1, 1)
    x = torch.randn(5, 64)
    y0, gx0, g0 = run(m, x)
    y1, gx1, g1 = run(fused, x)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-4)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-4, msg=k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_matches_peft():
    ref, fused = peft_pair()
    ref, fused = ref.cuda().bfloat16(), fused.cuda().bfloat16()
    fuse_lora_layers(fused)
    x = torch.randn(64, 16, device="cuda", dtype=torch.bfloat16)
    y0, gx0, _ = run(ref, x)
    y1, gx1, _ = run(fused, x)
    torch.testing.assert_close(y1.float(), y0.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx1.float(), gx0.float(), rtol=2e-2, atol=2e-2)


# ---- QLoRA: PEFT's bitsandbytes LoRA layers (lora.bnb.Linear4bit), as tuneforge's qlora method builds them --------
def qlora_llama(tmp_path, seed=0, quantization="nf4"):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from methods_helpers import build, make_method, save_tiny_llama

    path = save_tiny_llama(tmp_path / "base") if not (tmp_path / "base").exists() else str(tmp_path / "base")
    method = make_method("qlora", dropout=0.0, quantization=quantization)  # nf4: + double quant; float32 compute
    model, _ = build("llama", path, method, seed=seed)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # B starts at zero; make the update (and A's gradient) non-trivial
            torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(hash(n) % 2**31))
    return model


def llama_step(model, ids):
    model.train()  # train mode: bitsandbytes' CPU repacking (eval only) stays out of the comparison
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.logits.detach(), out.loss.detach(), grads


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_qlora_llama_fuses_every_bnb_layer_and_matches_peft(tmp_path, quantization):
    bnb = pytest.importorskip("bitsandbytes")
    from peft.tuners.lora import bnb as peft_bnb

    model = qlora_llama(tmp_path, quantization=quantization)
    peft_cls, bnb_cls = (
        (peft_bnb.Linear4bit, bnb.nn.Linear4bit)
        if quantization == "nf4"
        else (peft_bnb.Linear8bitLt, bnb.nn.Linear8bitLt)
    )
    lora_layers = [m for m in model.modules() if isinstance(m, peft_cls)]
    assert len(lora_layers) == 14 and all(isinstance(m.get_base_layer(), bnb_cls) for m in lora_layers)
    if quantization == "nf4":
        assert all(m.get_base_layer().weight.quant_state.nested for m in lora_layers)  # double quant
    else:
        assert all(m.get_base_layer().weight.dtype == torch.int8 for m in lora_layers)
    ids = torch.randint(5, 60, (2, 12), generator=torch.Generator().manual_seed(1))
    logits0, loss0, g0 = llama_step(model, ids)

    assert fuse_lora_layers(model) == (14, 14)
    assert all("_tf_peft_forward" in m.__dict__ for m in lora_layers)
    logits1, loss1, g1 = llama_step(model, ids)
    torch.testing.assert_close(logits1, logits0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-6)
    assert g0.keys() == g1.keys() and sum("lora_A" in k for k in g0) == 14 and sum("lora_B" in k for k in g0) == 14
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-6, msg=k)


def test_qlora_the_fused_function_runs_and_dequantizes_in_forward_and_backward(tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    import tuneforge.kernels.lora_fused as lf

    model = qlora_llama(tmp_path)
    fuse_lora_layers(model)
    calls = {"fused": 0, "dequant": 0}
    real_fused, real_dq = lf.lora_linear, lf._dequantize_4bit
    monkeypatch.setattr(
        lf, "lora_linear", lambda *a, **k: calls.__setitem__("fused", calls["fused"] + 1) or real_fused(*a, **k)
    )
    monkeypatch.setattr(
        lf, "_dequantize_4bit", lambda w: calls.__setitem__("dequant", calls["dequant"] + 1) or real_dq(w)
    )
    # the dequantizer is looked up per call, so the counting stand-in is what the layers use
    monkeypatch.setattr(
        lf,
        "_dequantizer",
        lambda base: (base.weight, lf._dequantize_4bit) if hasattr(base.weight, "quant_state") else (base.weight, None),
    )
    ids = torch.randint(5, 60, (2, 8), generator=torch.Generator().manual_seed(2))
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    assert calls == {"fused": 14, "dequant": 14}
    loss.backward()
    # once more in backward, nothing kept in between; except where no input gradient is needed: q/k/v of the
    # first block read the frozen embeddings' output, so backward needs only the LoRA (A, B) gradients there
    assert calls == {"fused": 14, "dequant": 14 + 11}


def test_fused_4bit_keeps_the_plain_layout_and_turns_back_a_repacked_one():
    bnb = pytest.importorskip("bitsandbytes")
    from bitsandbytes.functional import _convert_weight_packed_for_cpu
    from peft import LoraConfig, get_peft_model

    def four_bit_lora():
        torch.manual_seed(0)
        dense = nn.Linear(128, 64, bias=False)
        q = nn.Sequential(bnb.nn.Linear4bit(128, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4"))
        q[0].weight = bnb.nn.Params4bit(
            dense.weight.data.clone(), requires_grad=False, quant_type="nf4", compress_statistics=True
        )
        m = get_peft_model(q.to("cpu"), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["0"]))
        return m, m.get_base_model()[0].get_base_layer()

    x = torch.randn(3, 128)
    m, base = four_bit_lora()
    base.support_avx512bf16_for_cpu = True  # as on an AVX512-BF16 CPU
    fuse_lora_layers(m)
    assert base.support_avx512bf16_for_cpu is False  # PEFT's eval forward below must not repack it
    m.train()
    y_plain = m(x).detach()
    m.eval()
    with torch.no_grad(), m.disable_adapter():
        m(x)
    assert not getattr(base.weight.quant_state, "packing_format_for_cpu", False)
    torch.testing.assert_close(m(x).detach(), y_plain)

    # a weight repacked before fusing (what Linear4bit.forward does in eval mode on such a CPU, forced here)
    m, base = four_bit_lora()
    base.weight.data, base.weight.quant_state = _convert_weight_packed_for_cpu(
        base.weight.data, base.weight.quant_state
    )
    fuse_lora_layers(m)
    assert not base.weight.quant_state.packing_format_for_cpu
    # the repacking rounded absmax to bf16, so equal to that precision only
    torch.testing.assert_close(m(x).detach(), y_plain, rtol=2e-2, atol=1e-2)


def test_4bit_base_computes_in_its_compute_dtype_without_autocast():
    """QLoRA on a GPU: float32 activations (prepare_model_for_kbit_training upcasts the norms), a bf16
    bnb_4bit_compute_dtype. bitsandbytes runs the base GEMM in bf16; the fused layer runs the whole layer there."""
    bnb = pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    dense = nn.Linear(128, 64)
    q = nn.Sequential(bnb.nn.Linear4bit(128, 64, compute_dtype=torch.bfloat16, quant_type="nf4"))
    q[0].weight = bnb.nn.Params4bit(
        dense.weight.data.clone(), requires_grad=False, quant_type="nf4", compress_statistics=True
    )
    q[0].bias = nn.Parameter(dense.bias.data.clone(), requires_grad=False)
    m = get_peft_model(q.to("cpu"), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["0"]))
    for n, p in m.named_parameters():
        if "lora_B" in n:
            nn.init.normal_(p, std=0.1)
    fused = copy.deepcopy(m)
    fuse_lora_layers(fused)
    layer = fused.get_base_model()[0]
    x = torch.randn(5, 128)
    y0, gx0, g0 = run(m, x)
    y1, gx1, g1 = run(fused, x)
    assert y1.dtype == torch.float32 and gx1.dtype == torch.float32
    # the same formula in bf16, by hand
    w = bnb.functional.dequantize_4bit(layer.base_layer.weight.data, layer.base_layer.weight.quant_state)
    xb, a, b = x.bfloat16(), layer.lora_A["default"].weight.bfloat16(), layer.lora_B["default"].weight.bfloat16()
    ref = xb @ w.bfloat16().t() + layer.base_layer.bias.bfloat16() + layer.scaling["default"] * (xb @ a.t()) @ b.t()
    assert torch.equal(y1, y1.bfloat16().float())  # computed in bf16, then returned in x's float32
    torch.testing.assert_close(y1, ref.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y1, y0, rtol=2e-2, atol=5e-2)  # PEFT: bf16 base GEMM, float32 LoRA
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=5e-2, atol=5e-2, msg=k)
