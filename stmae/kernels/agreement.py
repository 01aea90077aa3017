"""How often the top-k sets of the readout survive fp16/bf16 keys.

The runtime's readout keeps the memory in the key dtype. On CUDA the similarity
multiplies fp16/bf16 keys as they are and accumulates in float32, which is the float32
product of the rounded keys up to the order of the sums; on the CPU the rounded keys are
upcast exactly and multiplied in float32. :func:`topk_set_agreement` measures what that
rounding does to the top-k set of every query row, against float32 keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..readout import similarity


@dataclass(frozen=True)
class TopkAgreement:
    """rows: query rows compared; identical: fraction of rows whose top-k set equals the
    float32 one; overlap: mean |A & B| / k; min_overlap: the worst row's |A & B| / k;
    boundary_ties: rows whose float32 k-th and (k+1)-th similarities are exactly equal
    (their set is not defined by float32 either); max_abs_sim_error: max |sim - sim32|;
    max_abs_readout_error: max |out - out32| of the top-k readout of ``values`` (0 when
    no values were given)."""

    dtype: str
    top_k: int
    rows: int
    identical: float
    overlap: float
    min_overlap: float
    boundary_ties: int
    max_abs_sim_error: float
    max_abs_readout_error: float

    def to_dict(self) -> dict:
        return asdict(self)


def topk_indices(sim: torch.Tensor, top_k: int) -> torch.Tensor:
    """sim (B, M, L) float32 -> (B, M, k) int64 indices of the k largest, sorted ascending
    by index (so sets compare elementwise)."""
    return torch.topk(sim, k=top_k, dim=-1).indices.sort(dim=-1).values


def set_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b (..., k) index sets -> (...) float32 |a & b| / k."""
    k = a.shape[-1]
    return (a.unsqueeze(-1) == b.unsqueeze(-2)).any(dim=-1).sum(dim=-1).float() / k


@torch.inference_mode()
def topk_set_agreement(query: torch.Tensor, keys: torch.Tensor, top_k: int, dtype: torch.dtype,
                       values: torch.Tensor | None = None) -> TopkAgreement:
    """Compare the top-k sets of the similarity with keys rounded to ``dtype`` against
    float32 keys.

    query: (B, C, M) float32 query keys; keys: (B, C, L) float32 memory keys, both as the
    network produced them; top_k < L; dtype: torch.float16/bfloat16 (float32 gives 1.0);
    values: optional (B, N, L) float32 to also compare the readout itself.
    """
    if top_k >= keys.shape[-1]:
        raise ValueError(f"top_k {top_k} must be smaller than the memory ({keys.shape[-1]} positions)")
    q32, k32 = query.float(), keys.float()
    sim32 = similarity(k32, q32)
    sim = similarity(k32.to(dtype), q32.to(dtype))
    ref = topk_indices(sim32, top_k)
    got = topk_indices(sim, top_k)
    overlap = set_overlap(ref, got).flatten()
    top_sorted = torch.topk(sim32, k=top_k + 1, dim=-1).values
    ties = int((top_sorted[..., top_k - 1] == top_sorted[..., top_k]).sum())
    readout_err = 0.0
    if values is not None:
        from .topk import topk_readout_torch

        out32 = topk_readout_torch(q32, k32, values, None, top_k)
        out = topk_readout_torch(q32.to(dtype), k32.to(dtype), values, None, top_k)
        readout_err = float((out - out32).abs().max())
    return TopkAgreement(
        dtype=str(dtype).replace("torch.", ""),
        top_k=top_k,
        rows=overlap.numel(),
        identical=float((overlap == 1).float().mean()),
        overlap=float(overlap.mean()),
        min_overlap=float(overlap.min()),
        boundary_ties=ties,
        max_abs_sim_error=float((sim - sim32).abs().max()),
        max_abs_readout_error=readout_err,
    )
