"""The fused top-k readout as Triton kernels (imports ``triton``; load it only through
:func:`stmae.kernels.topk.topk_readout`, which falls back to torch without it).

Same contract as :func:`stmae.kernels.topk.topk_readout_torch`. Two launches,
and no (M, L) similarity matrix anywhere:

1. ``_partial_topk_kernel``, grid (M / BLOCK_M, SPLITS, B): each program owns BLOCK_M
   query rows and one of SPLITS contiguous ranges of memory positions. It walks its range
   in tiles of BLOCK_L positions; a tile's similarities are ``tl.dot`` products of
   (BLOCK_M, BLOCK_C) query and (BLOCK_C, BLOCK_L) key blocks in the key dtype with a
   float32 accumulator (fp32 keys: IEEE fp32, not TF32). Invalid and out-of-range
   positions become -inf. The tile is then merged into the row's running top-k (K_PAD
   register slots): while the tile's best remaining candidate beats the row's worst kept
   one, it replaces it. A tile with no candidate above the current k-th best costs one
   comparison. The SPLITS partial top-k lists (B, SPLITS, M, K_PAD) go to a small scratch.
   Splitting memory gives the GPU enough programs for one stream (M = 1,620 rows at 480p
   are only 26 blocks of 64).
2. ``_finish_kernel``, grid (M / BLOCK_M, B): merges the SPLITS lists of a row into its
   top-k, takes the max-subtracted softmax in float32 and gathers the values:
   out[b, n, m] = sum_j w[m, j] * values[b, n, idx[m, j]]. A row without any valid
   position writes zeros.

Under ``TRITON_INTERPRET=1`` (the CPU tests) bfloat16 tiles are converted to float32
(exactly) before ``tl.dot``: the interpreter stores bfloat16 as raw uint16 and its dot
multiplies the bit patterns (triton-lang/triton#11584, closed as "not supported yet";
the debugging guide says the interpreter does not support bfloat16 arithmetic). The
product values are the same (bf16 x bf16 is exact in float32); compiled on a GPU the dot
takes the bf16 tiles as they are.

Ties: the candidate that comes first (lower position within a tile, earlier tile) is
kept on an exact tie at the k-th place; torch.topk breaks ties its own way, so the two
agree on the top-k sets except for exact ties.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from .contract import TRITON_MAX_TOP_K, check_readout_args

# Kernel globals must be constexpr (the compiler refuses plain floats; the interpreter not).
NEG_INF = tl.constexpr(float("-inf"))
POS_INF = tl.constexpr(float("inf"))
MAX_SPLITS = 16  # the finish kernel holds SPLITS x K_PAD candidates per row in registers


@triton.jit
def _merge_topk(top_v, top_i, cand_v, cand_i, TOPK: tl.constexpr, K_PAD: tl.constexpr, WIDTH: tl.constexpr,
                DENSE: tl.constexpr):
    """Merge candidates (R, WIDTH) into a running top-k (R, K_PAD).

    top_v: float32, slots >= TOPK hold +inf so that they are never the minimum;
    unfilled slots hold -inf. Candidates equal to the k-th best are not taken.
    DENSE: candidate j is memory position cand_i + j (cand_i a scalar: no index tile);
    else cand_i (R, WIDTH) holds each candidate's position."""
    slots = tl.arange(0, K_PAD)
    cols = tl.arange(0, WIDTH)
    kth = tl.min(top_v, axis=1)
    n_above = tl.sum((cand_v > kth[:, None]).to(tl.int32), axis=1)
    n_iter = tl.minimum(tl.max(n_above, axis=0), TOPK)
    for _ in range(n_iter):
        best = tl.max(cand_v, axis=1)
        arg = tl.argmax(cand_v, axis=1)
        pick = cols[None, :] == arg[:, None]
        if DENSE:
            best_i = cand_i + arg
        else:
            best_i = tl.sum(tl.where(pick, cand_i, 0), axis=1)
        worst = tl.min(top_v, axis=1)
        worst_slot = tl.argmin(top_v, axis=1)
        hit = (slots[None, :] == worst_slot[:, None]) & (best > worst)[:, None]
        top_v = tl.where(hit, best[:, None], top_v)
        top_i = tl.where(hit, best_i[:, None], top_i)
        cand_v = tl.where(pick, NEG_INF, cand_v)
    return top_v, top_i


@triton.jit
def _partial_topk_kernel(
    q_ptr, k_ptr, valid_ptr, pv_ptr, pi_ptr,
    C, M, L, L_PER_SPLIT,
    sq_b, sq_c, sq_m, sk_b, sk_c, sk_l, sva_b, sva_l, sp_b, sp_s, sp_m,
    HAS_VALID: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, TOPK: tl.constexpr, K_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # batch offsets can pass 2**31 elements
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.arange(0, K_PAD)
    row_ok = offs_m < M
    top_v = tl.zeros((BLOCK_M, K_PAD), tl.float32) + tl.where(slots < TOPK, NEG_INF, POS_INF)[None, :]
    top_i = tl.full((BLOCK_M, K_PAD), -1, tl.int32)
    l_start = split * L_PER_SPLIT
    l_end = tl.minimum(l_start + L_PER_SPLIT, L)
    q_base = q_ptr + b * sq_b
    k_base = k_ptr + b * sk_b
    for l0 in range(l_start, l_end, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        in_range = offs_l < l_end
        acc = tl.zeros((BLOCK_M, BLOCK_L), tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            a = tl.load(q_base + offs_m[:, None] * sq_m + offs_c[None, :] * sq_c,
                        mask=row_ok[:, None] & c_ok[None, :], other=0.0)
            kk = tl.load(k_base + offs_c[:, None] * sk_c + offs_l[None, :] * sk_l,
                         mask=c_ok[:, None] & in_range[None, :], other=0.0)
            if UPCAST:  # the interpreter only: it cannot multiply bf16 (see the docstring)
                acc = tl.dot(a.to(tl.float32), kk.to(tl.float32), acc, input_precision="ieee")
            elif IEEE:
                acc = tl.dot(a, kk, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, kk, acc)
        ok = in_range
        if HAS_VALID:
            ok = ok & (tl.load(valid_ptr + b * sva_b + offs_l * sva_l, mask=in_range, other=0) != 0)
        cand_v = tl.where(ok[None, :], acc, NEG_INF)
        top_v, top_i = _merge_topk(top_v, top_i, cand_v, l0, TOPK, K_PAD, BLOCK_L, True)
    out_off = b * sp_b + split * sp_s + offs_m[:, None] * sp_m + slots[None, :]
    store_ok = row_ok[:, None] & (slots[None, :] < K_PAD)
    tl.store(pv_ptr + out_off, top_v, mask=store_ok)
    tl.store(pi_ptr + out_off, top_i, mask=store_ok)


@triton.jit
def _finish_kernel(
    pv_ptr, pi_ptr, v_ptr, out_ptr,
    M, N, SPLITS,
    sp_b, sp_s, sp_m, sv_b, sv_n, sv_l, so_b, so_n, so_m,
    TOPK: tl.constexpr, K_PAD: tl.constexpr, SPLITS_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < M
    slots = tl.arange(0, K_PAD)
    WIDTH: tl.constexpr = SPLITS_PAD * K_PAD
    cols = tl.arange(0, WIDTH)
    split = cols // K_PAD
    slot = cols % K_PAD
    col_ok = (split < SPLITS) & (slot < TOPK)
    off = b * sp_b + split[None, :] * sp_s + offs_m[:, None] * sp_m + slot[None, :]
    load_ok = row_ok[:, None] & col_ok[None, :]
    cand_v = tl.load(pv_ptr + off, mask=load_ok, other=NEG_INF)
    cand_i = tl.load(pi_ptr + off, mask=load_ok, other=-1)
    top_v = tl.zeros((BLOCK_M, K_PAD), tl.float32) + tl.where(slots < TOPK, NEG_INF, POS_INF)[None, :]
    top_i = tl.full((BLOCK_M, K_PAD), -1, tl.int32)
    top_v, top_i = _merge_topk(top_v, top_i, cand_v, cand_i, TOPK, K_PAD, WIDTH, False)
    kept = (slots[None, :] < TOPK) & (top_i >= 0)
    masked = tl.where(kept, top_v, NEG_INF)
    mx = tl.max(masked, axis=1)
    mx = tl.where(mx == NEG_INF, 0.0, mx)  # a row without valid positions reads zeros
    w = tl.where(kept, tl.exp(masked - mx[:, None]), 0.0)
    denom = tl.sum(w, axis=1)
    w = w / tl.where(denom > 0.0, denom, 1.0)[:, None]
    for n in range(N):
        v = tl.load(v_ptr + b * sv_b + n * sv_n + top_i * sv_l, mask=kept & row_ok[:, None], other=0.0)
        o = tl.sum(v.to(tl.float32) * w, axis=1)
        tl.store(out_ptr + b * so_b + n * so_n + offs_m * so_m, o, mask=row_ok)


def interpreted() -> bool:
    """Whether Triton runs its CPU interpreter (TRITON_INTERPRET=1, read at import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # the interpreter


def _default_splits(device: torch.device, programs: int, tiles: int) -> int:
    """Memory splits so that about two programs per multiprocessor run, each over at
    least 4 tiles."""
    sms = _multiprocessors(device)
    want = -(-2 * sms // max(1, programs))
    return int(max(1, min(want, MAX_SPLITS, max(1, tiles // 4))))


def topk_readout_triton(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        valid: torch.Tensor | None, top_k: int | None, *,
                        block_m: int = 64, block_l: int = 64, block_c: int = 64,
                        splits: int | None = None, num_warps: int = 8, num_stages: int = 2) -> torch.Tensor:
    """The fused readout. query (B, C, M), keys (B, C, L) in the key dtype (fp16/bf16;
    fp32 runs IEEE fp32 products), values (B, N, L) float32/float16, valid (B, L) bool or
    None, 1 <= top_k <= TRITON_MAX_TOP_K (None: use the torch path) -> (B, N, M) float32.

    block_*, splits, num_warps, num_stages: tuning knobs (benchmarks/readout_kernel.py)."""
    check_readout_args(query, keys, values, valid, top_k)
    if top_k is None or top_k > TRITON_MAX_TOP_K:
        raise ValueError(f"the Triton readout supports 1 <= top_k <= {TRITON_MAX_TOP_K}, got {top_k!r}; "
                         f"use the torch readout")
    if query.dtype != keys.dtype:
        raise ValueError(f"query and keys must share the key dtype, got {query.dtype} and {keys.dtype}")
    for name, blk in (("block_m", block_m), ("block_l", block_l), ("block_c", block_c)):
        if blk < 16 or blk & (blk - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {blk}")
    b, c, m = query.shape
    n, length = values.shape[1], keys.shape[2]
    device = query.device
    out = torch.empty(b, n, m, dtype=torch.float32, device=device)
    if b == 0 or m == 0 or n == 0:
        return out
    if length == 0:
        return out.zero_()
    k_pad = _pow2(max(top_k, 2))
    m_blocks = triton.cdiv(m, block_m)
    tiles = triton.cdiv(length, block_l)
    if splits is None:
        splits = _default_splits(device, b * m_blocks, tiles)
    splits = max(1, min(int(splits), tiles, MAX_SPLITS))
    tiles_per_split = triton.cdiv(tiles, splits)
    l_per_split = tiles_per_split * block_l
    splits = triton.cdiv(tiles, tiles_per_split)  # no empty split
    part_v = torch.empty(b, splits, m, k_pad, dtype=torch.float32, device=device)
    part_i = torch.empty(b, splits, m, k_pad, dtype=torch.int32, device=device)
    valid_arg = valid.view(torch.uint8) if valid is not None else part_i  # a dummy pointer when absent
    sva = valid_arg.stride() if valid is not None else (0, 0)
    _partial_topk_kernel[(m_blocks, splits, b)](
        query, keys, valid_arg, part_v, part_i,
        c, m, length, l_per_split,
        query.stride(0), query.stride(1), query.stride(2),
        keys.stride(0), keys.stride(1), keys.stride(2),
        sva[0], sva[1],
        part_v.stride(0), part_v.stride(1), part_v.stride(2),
        HAS_VALID=valid is not None, IEEE=keys.dtype == torch.float32,
        UPCAST=keys.dtype == torch.bfloat16 and interpreted(), TOPK=top_k, K_PAD=k_pad,
        BLOCK_M=block_m, BLOCK_L=block_l, BLOCK_C=block_c, num_warps=num_warps, num_stages=num_stages,
    )
    finish_m = 16  # 16 rows x SPLITS_PAD x K_PAD candidates: no register spills (ptxas, sm_90)
    _finish_kernel[(triton.cdiv(m, finish_m), b)](
        part_v, part_i, values, out,
        m, n, splits,
        part_v.stride(0), part_v.stride(1), part_v.stride(2),
        values.stride(0), values.stride(1), values.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        TOPK=top_k, K_PAD=k_pad, SPLITS_PAD=_pow2(splits), BLOCK_M=finish_m,
        num_warps=4 if _pow2(splits) * k_pad <= 256 else 8,
    )
    return out
