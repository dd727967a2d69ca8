"""kernels/token_logps: per-sequence answer log-probs computed chunk by chunk equal the ones read from full logits,
values and gradients, without keeping any chunk's logits for backward."""

import pytest
import torch

from tuneforge.kernels.token_logps import token_logps

pytestmark = pytest.mark.unit


def _reference(hidden, weight, labels):
    logits = (hidden @ weight.T).float()
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    picked = torch.log_softmax(logits, -1).gather(-1, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(shifted != -100, picked, torch.zeros_like(picked))


@pytest.mark.parametrize("chunk_rows", [1, 3, 64])
def test_equals_full_logits_with_gradients(chunk_rows):
    torch.manual_seed(0)
    hidden = torch.randn(4, 9, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (4, 9))
    labels[:, :3] = -100  # a prompt
    labels[1, 6:] = -100  # padding
    head = torch.nn.Linear(16, 50, bias=False).double()
    head.weight = torch.nn.Parameter(weight.detach().clone())
    got = token_logps(hidden, head, labels, chunk_rows=chunk_rows)
    want = _reference(hidden, weight, labels)
    assert torch.allclose(got.double(), want.double(), atol=1e-5)
    (got * torch.linspace(0.5, 2, got.numel()).view_as(got)).sum().backward()
    g_hidden, g_head = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = None
    (want * torch.linspace(0.5, 2, want.numel()).view_as(want)).sum().backward()
    assert torch.allclose(g_hidden, hidden.grad, atol=1e-5)
    assert torch.allclose(g_head, weight.grad, atol=1e-5)


def test_sequence_sums_and_a_row_without_targets():
    torch.manual_seed(1)
    hidden = torch.randn(3, 6, 8)
    head = torch.nn.Linear(8, 20, bias=False)
    labels = torch.randint(0, 20, (3, 6))
    labels[0, :2] = -100
    labels[2, :] = -100  # no target at all: 0, and still a graph
    sums = token_logps(hidden.requires_grad_(), head, labels, chunk_rows=2).sum(-1)
    want = _reference(hidden, head.weight, labels).sum(-1)
    assert torch.allclose(sums, want, atol=1e-5)
    assert sums[2].item() == 0.0
    sums.sum().backward()
    assert hidden.grad is not None


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="do not match"):
        token_logps(torch.zeros(2, 3, 4), torch.nn.Linear(4, 5), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("chunk_rows", [1, 5])
def test_entropy_from_the_same_chunks(chunk_rows):
    """`entropy=True`: the entropy of each target position's distribution (0 elsewhere), without gradient, and the
    same log-probs and gradients as without it (GRPO's logged `entropy`)."""
    torch.manual_seed(1)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    head = torch.nn.Linear(16, 40, bias=False)
    labels = torch.randint(0, 40, (3, 7))
    labels[:, :2] = -100
    logps, ent = token_logps(hidden, head, labels, chunk_rows=chunk_rows, entropy=True)
    logp = torch.log_softmax(head(hidden).float(), -1)
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    want = (-(logp.exp() * logp).sum(-1) * (shifted != -100)).detach()
    assert torch.allclose(ent, want, atol=1e-5) and not ent.requires_grad
    assert torch.allclose(logps, token_logps(hidden, head, labels, chunk_rows=chunk_rows), atol=1e-6)
    logps.sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    none = torch.full_like(labels, -100)
    zeros, ent0 = token_logps(hidden, head, none, entropy=True)
    assert zeros.abs().sum() == 0 and ent0.abs().sum() == 0
