"""Batched, masked top-k memory readout: the torch reference and the dispatcher.

``topk_readout(query, keys, values, valid, top_k)`` is the readout of
:mod:`stmae.readout` for S streams at once, over a memory of fixed capacity L in which
only some positions hold a written frame:

    sim[b, m, l]  = sum_c query[b, c, m] * keys[b, c, l]     (float32 accumulation, no scale)
    sim[b, m, l]  = -inf where valid[b, l] is False
    w[b, m, :]    = softmax over the top_k largest sim[b, m, :]  (max-subtracted, float32)
    out[b, n, m]  = sum_{l in top-k} w[b, m, l] * values[b, n, l]

which is exactly :func:`stmae.readout.readout` over the valid positions only. A query
row with no valid position at all (an empty stream slot of a batch) reads zeros.

``lengths`` (B,) int32, optional, is each lane's count of readable positions: lane b
reads positions [0, lengths[b]) only, as if ``valid[b, l]`` were False for l >= lengths[b]
(the engine's valid memory slots form a prefix of its window). It is a device tensor, so
a captured CUDA graph reads only the valid prefix of each lane without changing any
shape: the Triton kernel takes its loop bounds from it; the torch path slices the memory
to the longest prefix when the host may read it (not while a graph is being captured)
and masks the positions past each lane's own count.

Two implementations with one signature:

- :func:`topk_readout_torch`, the reference and the fallback: the similarity in the key
  dtype with float32 output on CUDA (:func:`stmae.readout.similarity`), ``torch.topk``,
  softmax and a gather, in blocks of query rows so that no more than ~256 MiB of
  similarities exist at a time.
- ``stmae.kernels.triton_readout.topk_readout_triton``: one fused Triton kernel
  (similarity tiles, running top-k per row, softmax, aggregation; no (M, L) matrix).

:func:`topk_readout` picks Triton on CUDA when ``triton`` imports, torch otherwise.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from ..readout import fp32_readout, similarity, topk_aggregate
from .contract import TRITON_MAX_TOP_K, check_readout_args

BACKENDS = ("auto", "torch", "triton")
_CHUNK_ELEMENTS = 1 << 26  # float32 similarities per block of query rows (256 MiB)


def host_may_read(t: torch.Tensor) -> bool:
    """Whether reading ``t`` on the host is allowed now: always, except on CUDA while a
    CUDA graph is being captured (a device-to-host copy cannot be captured)."""
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def prefix_inputs(keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None,
                  lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The torch path's reading of ``lengths`` (B,) int32: keys (B, C, L), values (B, N, L)
    and valid (B, L) bool or None -> the same cut to the longest prefix (when the host may
    read ``lengths``: one synchronization) with positions past each lane's count masked
    out of ``valid`` (a (B, L') bool; None when every lane reads the whole cut)."""
    length = keys.shape[2]
    if host_may_read(lengths):
        lo, hi = (min(max(int(x), 0), length) for x in torch.stack(torch.aminmax(lengths)).tolist())
        keys, values = keys[:, :, :hi], values[:, :, :hi]
        valid = None if valid is None else valid[:, :hi]
        if lo == hi:
            return keys, values, valid
    inside = torch.arange(keys.shape[2], device=keys.device, dtype=torch.int32)[None, :] < lengths[:, None]
    return keys, values, inside if valid is None else valid & inside


@fp32_readout
def topk_readout_torch(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       valid: torch.Tensor | None, top_k: int | None,
                       lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The reference readout (see the module docstring).

    query: (B, C, M) key dtype (float32/float16/bfloat16); keys: (B, C, L) key dtype;
    values: (B, N, L) float32/float16; valid: (B, L) bool or None (all valid);
    top_k: positions kept per query row (None or >= L: softmax over all valid positions);
    lengths: (B,) int32 or None: lane b reads positions [0, lengths[b]) only.
    Returns (B, N, M) float32.
    """
    check_readout_args(query, keys, values, valid, top_k, lengths)
    b, _, m = query.shape
    out = torch.empty(b, values.shape[1], m, dtype=torch.float32, device=query.device)
    if b == 0:
        return out
    if lengths is not None:
        keys, values, valid = prefix_inputs(keys, values, valid, lengths)
    length = keys.shape[2]
    if length == 0:  # nothing to read (the softmax of no position is 0 here, not NaN)
        return out.zero_()
    values32 = values.float()
    rows = max(1, _CHUNK_ELEMENTS // max(1, b * length))
    invalid = None if valid is None else ~valid[:, None, :]
    for m0 in range(0, m, rows):
        sim = similarity(keys, query[:, :, m0:m0 + rows])  # (B, rows, L) float32
        if invalid is not None:
            sim = sim.masked_fill(invalid, float("-inf"))
        out[:, :, m0:m0 + rows] = topk_aggregate(sim, values32, top_k)
    return out


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether the Triton kernel can be used: ``triton`` is importable (checked once)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        from . import triton_readout  # noqa: F401  (imports triton)
    except Exception:  # a broken triton install: fall back to torch
        return False
    return True


def choose_backend(query: torch.Tensor, top_k: int | None, backend: str = "auto", needs_grad: bool = False) -> str:
    """'triton' for CUDA tensors with triton importable, 1 <= top_k <= TRITON_MAX_TOP_K and
    no gradient needed (the kernel has no backward), else 'torch'; an explicit
    'torch'/'triton' is returned as is (validated)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" and needs_grad:
        raise ValueError("the Triton readout has no backward; use backend='torch' where gradients are needed")
    if backend != "auto":
        return backend
    if (query.device.type == "cuda" and top_k is not None and top_k <= TRITON_MAX_TOP_K and not needs_grad
            and triton_available()):
        return "triton"
    return "torch"


def topk_readout(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                 valid: torch.Tensor | None, top_k: int | None, *, lengths: torch.Tensor | None = None,
                 backend: str = "auto") -> torch.Tensor:
    """Batched, masked top-k readout: (B, C, M), (B, C, L), (B, N, L), (B, L) bool or None
    -> (B, N, M) float32; lengths (B,) int32 or None: each lane's readable prefix.
    backend 'auto' (Triton on CUDA when available, else torch), 'torch' or 'triton'
    (CUDA, or any device under TRITON_INTERPRET=1)."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, keys, values))
    if choose_backend(query, top_k, backend, needs_grad) == "triton":
        from .triton_readout import topk_readout_triton

        return topk_readout_triton(query, keys, values, valid, top_k, lengths=lengths)
    return topk_readout_torch(query, keys, values, valid, top_k, lengths)
