"""Class weights, resampling and the weighted loss the classification task hands to the Trainer."""

import pytest
import torch

from tuneforge.data.balance import class_weights, resample, top_up_multipliers, weighted_cross_entropy
from tuneforge.errors import ConfigError

pytestmark = pytest.mark.unit

LABELS = ["a"] * 90 + ["b"] * 10


def test_balanced_weights_average_one_over_rows():
    w = class_weights(LABELS, ["a", "b"], "balanced")
    assert w[1] / w[0] == pytest.approx(9.0)
    assert (90 * w[0] + 10 * w[1]) / 100 == pytest.approx(1.0)
    assert class_weights(LABELS, ["a", "b"], "none") is None


def test_explicit_weights():
    w = class_weights(LABELS, ["a", "b"], {"b": 3})
    assert w[1] / w[0] == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="unknown class 'c'"):
        class_weights(LABELS, ["a", "b"], {"c": 2})
    with pytest.raises(ConfigError, match="positive"):
        class_weights(LABELS, ["a", "b"], {"a": 0})


def test_oversample_and_undersample():
    over = resample(LABELS, "oversample", seed=0)
    assert over[:100] == list(range(100))
    assert sum(LABELS[i] == "b" for i in over) == 90
    assert over == resample(LABELS, "oversample", seed=0)
    half = resample(LABELS, "oversample", ratio=0.5, seed=0)
    assert sum(LABELS[i] == "b" for i in half) == 45
    under = resample(LABELS, "undersample", seed=1)
    assert sum(LABELS[i] == "a" for i in under) == 10 and sum(LABELS[i] == "b" for i in under) == 10
    assert under != resample(LABELS, "undersample", seed=2)
    assert len(resample(LABELS, "undersample", ratio=0.5, seed=1)) == 30
    with pytest.raises(ConfigError, match="ratio"):
        resample(LABELS, "oversample", ratio=0)
    with pytest.raises(ConfigError, match="unknown mode 'smote'"):
        resample(LABELS, "smote")


def test_top_up_multipliers():
    m = top_up_multipliers(LABELS)
    assert m["a"] == 0 and m["b"] == pytest.approx(8.0)


def test_weighted_cross_entropy_matches_manual():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 0, 0])
    w = [0.5, 2.0]
    fn = weighted_cross_entropy(w)
    manual = torch.nn.functional.cross_entropy(logits, labels, reduction="none") * torch.tensor(w)[labels]
    assert fn({"logits": logits}, labels).item() == pytest.approx(
        (manual.sum() / torch.tensor(w)[labels].sum()).item(), rel=1e-5
    )
    assert fn({"logits": logits}, labels, num_items_in_batch=torch.tensor(12)).item() == pytest.approx(
        manual.sum().item() / 12, rel=1e-5
    )
    # equal weights: the model's usual loss
    assert weighted_cross_entropy([1.0, 1.0])({"logits": logits}, labels).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6
    )
