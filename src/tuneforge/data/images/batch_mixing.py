"""CutMix and MixUp of a training batch: mixed pixel values and the matching soft targets (the loss against them is
tuneforge.kernels.soft_ce). Randomness: torch's global generator, drawn in the training step, whose state a
checkpoint saves."""

from __future__ import annotations

import math

import torch


def _beta(alpha: float) -> float:
    a = torch.tensor(float(alpha), dtype=torch.float32)
    return float(torch.distributions.Beta(a, a).sample().item())


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box with sides sqrt(1 - lam) of the image's, centred at a uniform random
    point and clipped to the image."""
    cut = math.sqrt(max(0.0, 1.0 - lam))
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ()).item()), int(torch.randint(width, ()).item())
    top, left = cy - ch // 2, cx - cw // 2
    return (
        min(max(top, 0), height),
        min(max(top + ch, 0), height),
        min(max(left, 0), width),
        min(max(left + cw, 0), width),
    )


def mix_batch(
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    cutmix: tuple[float, float] | None,
    mixup: tuple[float, float] | None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix or MixUp a batch: returns (pixel values, soft targets [B, num_classes] that sum to 1).

    `cutmix`/`mixup` are (alpha, prob). With both, each batch picks one with equal chance; the chosen one is
    applied with its prob, else the batch stays as it is (one-hot targets). Row i is mixed with row (i-1) mod B.
    CutMix's label weight is exactly the fraction of pixels kept. The inputs are not changed in place."""
    if labels.dim() != 1 or pixel_values.dim() != 4 or labels.shape[0] != pixel_values.shape[0]:
        raise ValueError(
            f"mix_batch expects pixel values [B, C, H, W] and labels [B], got "
            f"{tuple(pixel_values.shape)} and {tuple(labels.shape)}"
        )
    targets = torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)
    x = pixel_values
    choices = [(kind, cfg) for kind, cfg in (("cutmix", cutmix), ("mixup", mixup)) if cfg is not None]
    if len(choices) == 2:
        choices = [choices[0] if torch.rand(()).item() < 0.5 else choices[1]]
    if choices:
        kind, (alpha, prob) = choices[0]
        if torch.rand(()).item() < float(prob):
            lam = _beta(alpha)
            partner_x = torch.roll(pixel_values, 1, 0)
            partner_t = torch.roll(targets, 1, 0)
            if kind == "mixup":
                x = pixel_values * lam + partner_x * (1.0 - lam)
            else:
                height, width = pixel_values.shape[-2:]
                top, bottom, left, right = cutmix_box(height, width, lam)
                x = pixel_values.clone()
                x[:, :, top:bottom, left:right] = partner_x[:, :, top:bottom, left:right]
                lam = 1.0 - (bottom - top) * (right - left) / (height * width)
            targets = targets * lam + partner_t * (1.0 - lam)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return x, targets
