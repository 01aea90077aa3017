"""Memory readout: dot-product similarity, top-k softmax, value aggregation (float32).

Similarities of raw ResNet keys reach 500-1600, so the softmax always subtracts the
column maximum (the published top-k branch does not and overflows to NaN).

Every function here runs with autocast disabled: under ``torch.autocast`` (AMP training)
``bmm`` would otherwise run and return fp16/bf16 whatever the ``.float()`` casts say, and
similarities of ~1000 rounded by up to 0.5 (fp16) or 4 (bf16) before the softmax would
make training differ from the float32 runtime.

Keys may be float16/bfloat16 (the key dtype): on CUDA the similarity multiplies them as
they are and accumulates and returns float32 (``torch.bmm(..., out_dtype=torch.float32)``,
torch >= 2.8), without an fp32 copy of the memory, when no gradient is needed (that
overload has no derivative); elsewhere, and in training, the keys are upcast (exact) and
multiplied in float32. Top-k, softmax and aggregation are float32 everywhere.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

HALF_DTYPES = (torch.float16, torch.bfloat16)


def fp32_readout(fn):
    """Decorator: run ``fn`` with autocast off on every device type its tensors can use."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            if torch.cuda.is_available():
                with torch.autocast("cuda", enabled=False):
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def cpu_bf16_products(enabled: bool = True):
    """Within the block, float32 matrix products on the CPU may round their operands to
    bfloat16 and multiply them with float32 accumulation and float32 output (oneDNN's
    "bf32" mode: AMX or AVX512-BF16 where the CPU has them, plain float32 where it does
    not). Restores the previous mode on exit. A no-op when ``enabled`` is False or this
    torch has no such switch.

    The runtime uses it for the readout of int8 exports only: their keys already differ
    from float32 by ~5% (the int8 key encoder), bf16 operands add ~0.1%, and the
    similarity of a 480p frame against 4 memory frames (1620 x 1024 x 6480) drops from
    84 to 45 ms on two Xeon cores with AMX. The switch is process-wide torch state: a
    float32 matmul in another thread during the block may use it too.
    """
    matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    if not enabled or matmul is None or not hasattr(matmul, "fp32_precision"):
        yield
        return
    before = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = before


# Devices whose bmm has the (fp16/bf16 -> fp32) ``out_dtype`` overload.
OUT_DTYPE_DEVICES = ("cuda",)


def key_dtype_bmm_supported(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``torch.bmm(a, b, out_dtype=torch.float32)`` can multiply these as they are:
    CUDA, both float16 or both bfloat16, a torch with the ``out_dtype`` overload, and no
    gradient needed (that overload has no derivative: training upcasts instead)."""
    return (
        a.device.type in OUT_DTYPE_DEVICES
        and a.dtype in HALF_DTYPES
        and a.dtype == b.dtype
        and _HAS_BMM_OUT_DTYPE
        and not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))
    )


def _bmm_has_out_dtype() -> bool:
    try:
        major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 8)


_HAS_BMM_OUT_DTYPE = _bmm_has_out_dtype()


@fp32_readout
def similarity(memory_keys: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """sim[b, m, n] = sum_c query_key[b, c, m] * memory_keys[b, c, n], accumulated in float32.

    memory_keys: (B, C, L) float32/float16/bfloat16 with L = T*h*w memory positions;
    query_key: (B, C, M), M = h*w, same dtype family.
    Returns (B, M, L) float32: query-major, so each query's similarities to the memory are
    contiguous and the top-k runs along the fast axis. fp16/bf16 keys on CUDA are
    multiplied in their dtype with float32 accumulation and output (no float32 copy of the
    memory) when no gradient is needed; otherwise (training, other devices) they are
    upcast exactly first.
    """
    query_t = query_key.transpose(1, 2)
    if key_dtype_bmm_supported(query_key, memory_keys):
        return torch.bmm(query_t, memory_keys, out_dtype=torch.float32)
    return torch.bmm(query_t.float(), memory_keys.float())


@fp32_readout
def topk_aggregate(sim: torch.Tensor, memory_values: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """sim (B, M, L) float32, memory_values (B, N, L) -> (B, N, M) float32.

    Each query position m reads sum_n value[:, n] * softmax(top-k of sim[m])[n]: only the
    (B, M, k) top-k values, indices and weights are materialized, never an (L, M) affinity.
    top_k None or >= L: the softmax over all of memory. Positions masked to -inf are never
    read; a row with no finite similarity reads zeros (its softmax would be NaN).
    """
    values = memory_values.float()
    if top_k is None or top_k >= sim.shape[-1]:
        weights = torch.softmax(sim, dim=-1)
        weights = weights.masked_fill(torch.isneginf(sim.amax(dim=-1, keepdim=True)), 0.0)
        return torch.bmm(values, weights.transpose(1, 2))
    if top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    top_vals, top_idx = torch.topk(sim, k=top_k, dim=-1)  # (B, M, k), sorted
    weights = torch.softmax(top_vals, dim=-1)  # max-subtracted: stable
    weights = weights.masked_fill(torch.isneginf(top_vals[..., :1]), 0.0)
    b, n, length = values.shape
    m = top_idx.shape[1]
    # Gather the values at the chosen positions: (B, N, M, k); the expand is a view.
    idx = top_idx.unsqueeze(1).expand(b, n, m, top_k)
    picked = torch.gather(values.unsqueeze(2).expand(b, n, m, length), 3, idx)
    return (picked * weights.unsqueeze(1)).sum(dim=-1)


@fp32_readout
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


@fp32_readout
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
