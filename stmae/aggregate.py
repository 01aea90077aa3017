"""Soft aggregation of per-object probabilities into a distribution with background."""

from __future__ import annotations

import torch


def aggregate(logits: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-object logits -> (aggregated logits, probabilities with background first).

    logits: (B, N, H, W). p_i = sigmoid(logit_i), p_bg = prod_i (1 - p_i); the stack
    [p_bg, p_1..p_N] is clamped to [eps, 1 - eps], mapped to log(p / (1 - p)) and passed
    through a softmax over the N + 1 channels. Runs in float32.
    Returns (aggregated_logits, prob): both (B, N+1, H, W) float32.
    """
    prob = torch.sigmoid(logits.float())
    background = torch.prod(1 - prob, dim=1, keepdim=True)
    stacked = torch.cat([background, prob], dim=1).clamp(eps, 1 - eps)
    agg_logits = torch.log(stacked / (1 - stacked))
    return agg_logits, channel_softmax(agg_logits)


def channel_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 written out: exp(x - max) / sum. Equal to ``torch.softmax(x, 1)``
    within float32 rounding; exported to ONNX it becomes ReduceMax/Sub/Exp/ReduceSum/Div,
    which ONNX Runtime's CPU provider runs ~5x faster than a Softmax over a non-last axis
    (2.3 vs 10.7 ms at (1, 2, 480, 864) on two Xeon cores)."""
    shifted = x - x.amax(dim=1, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(dim=1, keepdim=True)
