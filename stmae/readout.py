"""Memory readout: dot-product similarity, top-k softmax, value aggregation (float32).

Similarities of raw ResNet keys reach 500-1600, so the softmax always subtracts the
column maximum (the published top-k branch does not and overflows to NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity(memory_keys: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """sim[b, m, n] = sum_c query_key[b, c, m] * memory_keys[b, c, n], in float32.

    memory_keys: (B, C, L) with L = T*h*w memory positions; query_key: (B, C, M), M = h*w.
    Returns (B, M, L) float32: query-major, so each query's similarities to the memory are
    contiguous and the top-k runs along the fast axis.
    """
    return torch.bmm(query_key.float().transpose(1, 2), memory_keys.float())


def topk_aggregate(sim: torch.Tensor, memory_values: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """sim (B, M, L) float32, memory_values (B, N, L) -> (B, N, M) float32.

    Each query position m reads sum_n value[:, n] * softmax(top-k of sim[m])[n]: only the
    (B, M, k) top-k values, indices and weights are materialized, never an (L, M) affinity.
    top_k None or >= L: the softmax over all of memory.
    """
    values = memory_values.float()
    if top_k is None or top_k >= sim.shape[-1]:
        return torch.bmm(values, torch.softmax(sim, dim=-1).transpose(1, 2))
    if top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    top_vals, top_idx = torch.topk(sim, k=top_k, dim=-1)  # (B, M, k)
    weights = torch.softmax(top_vals, dim=-1)  # max-subtracted: stable
    b, n, length = values.shape
    m = top_idx.shape[1]
    # Gather the values at the chosen positions: (B, N, M, k); the expand is a view.
    idx = top_idx.unsqueeze(1).expand(b, n, m, top_k)
    picked = torch.gather(values.unsqueeze(2).expand(b, n, m, length), 3, idx)
    return (picked * weights.unsqueeze(1)).sum(dim=-1)


def readout(
    memory_keys: torch.Tensor,
    memory_values: torch.Tensor,
    query_key: torch.Tensor,
    top_k: int | None,
) -> torch.Tensor:
    """Read values for every query position.

    memory_keys: (B, C, L); memory_values: (B, N, L); query_key: (B, C, M).
    top_k: positions kept per query column (None or >= L: softmax over all of memory).
    Returns (B, N, M) float32: sum_n value[:, :, n] * affinity[n, m].
    """
    return topk_aggregate(similarity(memory_keys, query_key), memory_values, top_k)


def read_memory(
    query_key: torch.Tensor,
    memory_keys: torch.Tensor,
    memory_values: torch.Tensor,
    top_k: int | None = 30,
) -> torch.Tensor:
    """Coarse masks of a query frame read out of memory.

    query_key: (B, C, h, w) the query frame's f16; memory_keys: (B, C, L) raw f16 of the
    memory frames flattened over (T, h, w); memory_values: (B, N, L) per-object probability
    maps at f16 size, flattened the same way.
    Returns coarse masks (B, N, h, w) float32.
    """
    b, c, h, w = query_key.shape
    if memory_keys.shape[:2] != (b, c):
        raise ValueError(
            f"memory keys {tuple(memory_keys.shape)} do not match the query key "
            f"{tuple(query_key.shape)} in batch and channels"
        )
    if memory_values.shape[0] != b or memory_values.shape[2] != memory_keys.shape[2]:
        raise ValueError(
            f"memory values {tuple(memory_values.shape)} do not match memory keys "
            f"{tuple(memory_keys.shape)}: expected (B, N, L) with the same B and L"
        )
    out = readout(memory_keys, memory_values, query_key.flatten(2), top_k)
    return out.view(b, -1, h, w)


def to_key_size(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize per-object masks/probabilities (B, N, H, W) to key size (h, w), bilinear,
    align_corners False; returns float32 (B, N, h, w)."""
    return F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)


def upsample_coarse(coarse: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize coarse masks (B, N, h, w) to image size (H, W), bilinear, align_corners False."""
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
