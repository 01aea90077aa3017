"""The one-shot loss on frame 0: cross-entropy over background + objects plus dice.

Absent object slots (clips with fewer objects than the batch's widest clip) are masked:
their logits were pinned to a very negative value by the cycle, their targets are empty,
and they are left out of the dice term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossTerms:
    """total = cross_entropy + dice (0-dim float32 tensors)."""

    total: torch.Tensor
    cross_entropy: torch.Tensor
    dice: torch.Tensor


def labels_from_masks(first_masks: torch.Tensor) -> torch.Tensor:
    """first_masks (B, N, H, W) one-hot {0,1} -> labels (B, H, W) int64, 0 = background."""
    background = (first_masks.sum(dim=1, keepdim=True) < 0.5).float()
    return torch.cat([background, first_masks.float()], dim=1).argmax(dim=1)


def dice_loss(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - dice per valid object, averaged. prob, target: (B, N, H, W); valid: (B, N) bool."""
    p = prob.flatten(2).float()
    g = target.flatten(2).float()
    numerator = 2 * (p * g).sum(-1)
    denominator = p.sum(-1) + g.sum(-1)
    per_object = 1 - (numerator + 1) / (denominator + 1)
    weights = valid.float()
    return (per_object * weights).sum() / weights.sum().clamp(min=1)


def cycle_loss(
    agg_logits: torch.Tensor, prob: torch.Tensor, first_masks: torch.Tensor, valid: torch.Tensor
) -> LossTerms:
    """agg_logits, prob: (B, N+1, H, W) float32 (background first); first_masks: (B, N, H, W)
    frame 0's object masks; valid: (B, N) bool. Returns :class:`LossTerms`."""
    labels = labels_from_masks(first_masks)
    ce = F.cross_entropy(agg_logits.float(), labels)
    dice = dice_loss(prob[:, 1:], first_masks, valid)
    return LossTerms(total=ce + dice, cross_entropy=ce, dice=dice)
