"""Packing: several examples per row, with no attention or position leaking across examples: the per-example
loss (and every per-token log-probability) is the same packed and unpacked."""

import pytest
import torch
import torch.nn.functional as F

from tuneforge.data.packing import IGNORE, SFTCollator, pack_examples, padding_fraction

pytestmark = pytest.mark.unit


def _examples(n=7, seed=0, vocab=50):
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for _i in range(n):
        length = int(torch.randint(4, 20, (1,), generator=g))
        x = torch.randint(3, vocab, (length,), generator=g).tolist()
        cut = length // 3  # a "prompt" part without labels
        ids.append(x)
        labels.append([IGNORE] * cut + x[cut:])
    return ids, labels


def test_pack_examples_keeps_every_token_and_restarts_positions():
    ids, labels = _examples(25)
    cols = pack_examples(ids, labels, max_length=40)
    assert sum(cols["n_examples"]) == 25 and all(l <= 40 for l in cols["length"])
    assert sorted(t for row in cols["input_ids"] for t in row) == sorted(t for x in ids for t in x)
    assert len(cols["length"]) < 25
    for pos, lab in zip(cols["position_ids"], cols["labels"]):
        starts = [i for i, p in enumerate(pos) if p == 0]
        assert starts[0] == 0 and all(lab[s] == IGNORE for s in starts)  # no prediction across a boundary
        assert all(pos[i] == pos[i - 1] + 1 for i in range(1, len(pos)) if i not in starts)


def test_collator_pads_packed_rows_with_a_separate_position_segment():
    out = SFTCollator(pad_token_id=0, packed=True)(
        [
            {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "position_ids": [0, 1, 2]},
            {"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE, 6, IGNORE, 8, 9], "position_ids": [0, 1, 0, 1, 2]},
        ]
    )
    assert "attention_mask" not in out and out["use_cache"] is False
    assert out["position_ids"][0].tolist() == [0, 1, 2, 0, 1]
    assert out["labels"][0].tolist() == [IGNORE, 6, 7, IGNORE, IGNORE]
    plain = SFTCollator(pad_token_id=0)([{"input_ids": [5], "labels": [5]}, {"input_ids": [5, 6], "labels": [5, 6]}])
    assert plain["attention_mask"].tolist() == [[1, 0], [1, 1]] and "position_ids" not in plain


def test_padding_fraction():
    assert padding_fraction([10, 10, 10, 10], 2, False) == 0.0
    assert padding_fraction([10, 30], 2, False) == pytest.approx(1 - 40 / 60)


def _token_logprobs(model, batch):
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()  # model in eval mode
    labels = batch["labels"][:, 1:]
    lp = -F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(labels.shape)
    return lp, labels != IGNORE


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked_loss(attn):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation=attn,
    )
    model = LlamaForCausalLM(cfg).eval().float()
    ids, labels = _examples(7)
    with torch.no_grad():
        # unpacked: each example alone (batch of one, no padding at all)
        single = []
        for x, y in zip(ids, labels):
            lp, m = _token_logprobs(model, SFTCollator(0)([{"input_ids": x, "labels": y}]))
            single.append((lp[m], lp[m].mean()))
        # packed: rows of several examples, padded into one batch
        cols = pack_examples(ids, labels, max_length=45)
        assert max(cols["n_examples"]) > 1
        feats = [{k: cols[k][r] for k in ("input_ids", "labels", "position_ids")} for r in range(len(cols["length"]))]
        lp, m = _token_logprobs(model, SFTCollator(0, packed=True)(feats))
    # walk the packed rows and cut them back into examples (pack order is by decreasing length)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    found = {}
    for r in range(len(feats)):
        pos = feats[r]["position_ids"]
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for a, b in zip(starts, starts[1:]):
            seq = feats[r]["input_ids"][a:b]
            k = next(i for i in order if ids[i] == seq and i not in found)
            # token t's log-prob sits at t-1 in the shifted arrays; the example's first label is ignored anyway
            seg_lp, seg_m = lp[r, a : b - 1], m[r, a : b - 1]
            found[k] = (seg_lp[seg_m], seg_lp[seg_m].mean())
    assert len(found) == len(ids)
    for k, (tok_lp, mean) in enumerate(single):
        assert torch.allclose(found[k][0], tok_lp, atol=1e-5), k
        assert abs(float(found[k][1] - mean)) < 1e-5
