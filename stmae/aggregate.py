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
    return agg_logits, torch.softmax(agg_logits, dim=1)
