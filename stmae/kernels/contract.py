"""The readout's contract, shared by every implementation: accepted dtypes, the largest
top-k the Triton kernel keeps in registers, and the argument check.

:mod:`stmae.kernels.topk` (the torch reference and the dispatcher) and
:mod:`stmae.kernels.triton_readout` (the fused kernel) both import it; neither imports the
other at module level.
"""

from __future__ import annotations

import torch

from ..readout import HALF_DTYPES

KEY_DTYPES = (torch.float32, *HALF_DTYPES)
VALUE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The Triton kernel keeps the running top-k of each query row in registers; beyond this
# it falls back to torch.
TRITON_MAX_TOP_K = 64


def check_readout_args(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       valid: torch.Tensor | None, top_k: int | None,
                       lengths: torch.Tensor | None = None) -> None:
    """Raise ValueError unless the shapes, dtypes and devices fit the readout's contract.

    query (B, C, M), keys (B, C, L), values (B, N, L); valid (B, L) bool or None (a
    broadcast view, e.g. stride 0 over B, is fine); lengths (B,) int32 or None: lane b
    reads positions [0, lengths[b]) only (values below 0 read nothing, above L all). The
    values of ``lengths`` are not read here: that would synchronize with the device."""
    if query.dim() != 3 or keys.dim() != 3 or values.dim() != 3:
        raise ValueError(
            f"expected query (B, C, M), keys (B, C, L), values (B, N, L); got "
            f"{tuple(query.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}"
        )
    b, c, _ = query.shape
    if keys.shape[:2] != (b, c):
        raise ValueError(f"keys {tuple(keys.shape)} do not match query {tuple(query.shape)} in B and C")
    length = keys.shape[2]
    if values.shape[0] != b or values.shape[2] != length:
        raise ValueError(f"values {tuple(values.shape)} do not match keys {tuple(keys.shape)}: expected (B, N, L)")
    if query.dtype not in KEY_DTYPES or keys.dtype not in KEY_DTYPES:
        raise ValueError(f"query/keys must be float32, float16 or bfloat16, got {query.dtype}/{keys.dtype}")
    if values.dtype not in VALUE_DTYPES:
        raise ValueError(f"values must be float32, float16 or bfloat16, got {values.dtype}")
    if valid is not None:
        if valid.dtype != torch.bool or tuple(valid.shape) != (b, length):
            raise ValueError(f"valid must be a (B, L) = ({b}, {length}) bool tensor, got "
                             f"{valid.dtype} {tuple(valid.shape)}")
    if lengths is not None and (lengths.dtype != torch.int32 or tuple(lengths.shape) != (b,)):
        raise ValueError(f"lengths must be a (B,) = ({b},) int32 tensor, got {lengths.dtype} {tuple(lengths.shape)}")
    extra = tuple(t for t in (valid, lengths) if t is not None)
    devices = {t.device for t in (query, keys, values) + extra}
    if len(devices) != 1:
        raise ValueError(f"query, keys, values, valid and lengths must be on one device, got "
                         f"{sorted(map(str, devices))}")
    if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
