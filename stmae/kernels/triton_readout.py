"""The fused top-k readout as Triton kernels (imports ``triton``; load it only through
:func:`stmae.kernels.topk.topk_readout`, which falls back to torch without it).

Same contract as :func:`stmae.kernels.topk.topk_readout_torch`; no (M, L) similarity
matrix exists anywhere.

``_readout_kernel``, grid (M / BLOCK_M, SPLITS, B), query-stationary: each program owns
BLOCK_M query rows of lane b and streams that lane's memory past them in tiles of
BLOCK_L positions, only up to the lane's count of readable positions (``lengths[b]``,
loaded from device memory: a captured CUDA graph skips empty slots without any shape
changing). SPLITS programs share a lane's readable tiles in contiguous ranges (computed
from its own count, so a lane with 3 valid slots of 21 still uses every split).

- A tile's similarities are ``tl.dot`` products of (BLOCK_M, BLOCK_C) query and
  (BLOCK_C, BLOCK_L) key blocks in the key dtype with a float32 accumulator (fp32 keys:
  IEEE fp32, not TF32). When C <= BLOCK_C the query block is loaded once, before the
  loop over memory, and stays in registers.
- Loads: key tiles are contiguous along L (stride 1, specialized by Triton), start at
  multiples of BLOCK_L (``tl.multiple_of`` / ``tl.max_contiguous`` hints), and their only
  bounds mask is ``l < L``; with row strides and L multiples of 16 (the engine pads its
  memory positions so: :class:`runtime.engine.device_step.BucketState`) Triton knows the
  mask is constant over 16 positions and issues 16-byte asynchronous copies (cp.async,
  pipelined over ``num_stages``). With L a multiple of BLOCK_L and C of BLOCK_C there is
  no mask at all. Query blocks load along C: a query whose M axis is the contiguous one
  (NCHW features) is copied C-contiguous first (C*M elements, small next to the
  memory), so M (1,620 at 480p, not a multiple of 16) only masks whole rows. Compiled for
  sm_90 (bf16, default configuration) with 16-multiple strides, both tiles load with
  16-byte copies and nothing else is loaded per product step; with L and the row stride
  34,020 (unpadded) the key tile compiles to 32 scalar 16-bit loads per thread per step
  instead (tests/stmae/test_kernels.py checks the first; triton's compiler and ptxas
  need no GPU).
- Invalid positions (``valid`` False, at or past ``lengths[b]``, padding) become -inf;
  the tile is merged into the rows' running top-k, kept in registers as (BLOCK_M, K_PAD)
  values and positions: only rows' candidates above their current k-th best are taken,
  one per row per round, for as many rounds as the row with the most such candidates
  needs (one comparison for a tile with none, the common case once the top-k has
  settled). Value and position come from one combined max/argmax reduction.
- One split (SPLITS = 1): the same program then takes the max-subtracted float32 softmax
  of its rows' top-k and aggregates the values:
  out[b, n, m] = sum_j w[m, j] * values[b, n, idx[m, j]] (a row without any valid
  position writes zeros). Several splits: each writes its partial top-k list to a small
  scratch (B, SPLITS, M, K_PAD) and ``_merge_kernel``, grid (M / 16, B), merges the
  lists of a row, then does the softmax and aggregation.

SPLITS is chosen so that the programs fill whole waves of the GPU (about
``PROGRAMS_PER_SM`` resident programs per multiprocessor) with at least 4 tiles each:
one 480p stream (M = 1,620 rows, 26 blocks of 64) needs the splits to fill an H100.

Under ``TRITON_INTERPRET=1`` (the CPU tests) bfloat16 tiles are converted to float32
(exactly) before ``tl.dot``: the interpreter stores bfloat16 as raw uint16 and its dot
multiplies the bit patterns (triton-lang/triton#11584, closed as "not supported yet";
the debugging guide says the interpreter does not support bfloat16 arithmetic). The
product values are the same (bf16 x bf16 is exact in float32); compiled on a GPU the dot
takes the bf16 tiles as they are. The interpreter ignores the load hints.

Ties: the candidate that comes first (lower position within a tile, earlier tile,
earlier split) is kept on an exact tie at the k-th place; torch.topk breaks ties its own
way, so the two agree on the top-k sets except for exact ties.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from .contract import TRITON_MAX_TOP_K, check_readout_args

# Kernel globals must be constexpr (the compiler refuses plain floats; the interpreter not).
NEG_INF = tl.constexpr(float("-inf"))
POS_INF = tl.constexpr(float("inf"))
MAX_SPLITS = 16  # the merge kernel holds SPLITS x K_PAD candidates per row in registers
MERGE_BLOCK_M = 16  # rows per merge program: 16 x SPLITS_PAD x K_PAD candidates, no spills (sm_90)
# Resident readout programs per multiprocessor assumed when sizing waves: the default
# configuration compiles (sm_90, ptxas) to 165-194 registers x 128 threads and 48 KiB of
# shared memory, so two (sometimes three) fit; checked by tests/stmae/test_kernels.py.
PROGRAMS_PER_SM = 2
MIN_TILES_PER_SPLIT = 4
# The default configurations: 4 warps, 64 query rows; fp16/bf16 keys (tensor cores): 64-position
# key tiles, 64 channels per product step; fp32 keys (IEEE products, no tensor cores, more
# registers): 64 positions, 16 channels. No register spills (checked by tests/stmae/test_kernels.py with
# ptxas for sm_90).
DEFAULT_CONFIG = {"block_m": 64, "block_l": 64, "block_c": 64, "num_warps": 4, "num_stages": 3}
FLOAT32_CONFIG = {"block_m": 64, "block_l": 64, "block_c": 16, "num_warps": 4, "num_stages": 3}


def default_config(key_dtype: torch.dtype) -> dict:
    """The launch configuration for keys of ``key_dtype`` (a copy)."""
    return dict(FLOAT32_CONFIG if key_dtype == torch.float32 else DEFAULT_CONFIG)


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
        best, arg = tl.max(cand_v, axis=1, return_indices=True)
        worst, worst_slot = tl.min(top_v, axis=1, return_indices=True)
        pick = cols[None, :] == arg[:, None]
        if DENSE:
            best_i = cand_i + arg
        else:
            best_i = tl.sum(tl.where(pick, cand_i, 0), axis=1)
        hit = (slots[None, :] == worst_slot[:, None]) & (best > worst)[:, None]
        top_v = tl.where(hit, best[:, None], top_v)
        top_i = tl.where(hit, best_i[:, None], top_i)
        cand_v = tl.where(pick, NEG_INF, cand_v)
    return top_v, top_i


@triton.jit
def _softmax_aggregate(top_v, top_i, v_base, out_base, offs_m, row_ok, N, sv_n, sv_l, so_n, so_m,
                       TOPK: tl.constexpr, K_PAD: tl.constexpr):
    """out[n, m] = sum_j softmax(top_v[m])[j] * values[n, top_i[m, j]] in float32 over the
    kept slots (position >= 0); a row with none writes zeros."""
    slots = tl.arange(0, K_PAD)
    kept = (slots[None, :] < TOPK) & (top_i >= 0)
    masked = tl.where(kept, top_v, NEG_INF)
    mx = tl.max(masked, axis=1)
    mx = tl.where(mx == NEG_INF, 0.0, mx)
    w = tl.where(kept, tl.exp(masked - mx[:, None]), 0.0)
    denom = tl.sum(w, axis=1)
    w = w / tl.where(denom > 0.0, denom, 1.0)[:, None]
    for n in range(N):
        v = tl.load(v_base + n * sv_n + top_i * sv_l, mask=kept & row_ok[:, None], other=0.0)
        o = tl.sum(v.to(tl.float32) * w, axis=1)
        tl.store(out_base + n * so_n + offs_m * so_m, o, mask=row_ok)


@triton.jit
def _readout_kernel(
    q_ptr, k_ptr, valid_ptr, len_ptr, v_ptr, out_ptr, pv_ptr, pi_ptr,
    C, M, L, N,
    sq_b, sq_c, sq_m, sk_b, sk_c, sk_l, sva_b, sva_l, sv_b, sv_n, sv_l, so_b, so_n, so_m, sp_b, sp_s, sp_m,
    HAS_VALID: tl.constexpr, HAS_LEN: tl.constexpr, FUSED: tl.constexpr, Q_ONCE: tl.constexpr,
    EVEN_C: tl.constexpr, EVEN_L: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    TOPK: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    splits = tl.num_programs(1)
    b = tl.program_id(2).to(tl.int64)  # batch offsets can pass 2**31 elements
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < M
    cols_c = tl.arange(0, BLOCK_C)
    slots = tl.arange(0, K_PAD)
    top_v = tl.zeros((BLOCK_M, K_PAD), tl.float32) + tl.where(slots < TOPK, NEG_INF, POS_INF)[None, :]
    top_i = tl.full((BLOCK_M, K_PAD), -1, tl.int32)
    # This lane's readable positions [0, n_len), and this split's share of their tiles.
    n_len = L
    if HAS_LEN:
        n_len = tl.minimum(tl.maximum(tl.load(len_ptr + b), 0), L)
    tiles = tl.cdiv(n_len, BLOCK_L)
    per_split = tl.cdiv(tiles, splits)
    t_lo = split * per_split
    t_hi = tl.minimum(t_lo + per_split, tiles)
    q_base = q_ptr + b * sq_b
    k_base = k_ptr + b * sk_b
    if Q_ONCE:  # C <= BLOCK_C: the query block stays in registers for the whole lane
        q_mask = row_ok[:, None] & (cols_c[None, :] < C)
        q_once = tl.load(q_base + offs_m[:, None] * sq_m + cols_c[None, :] * sq_c, mask=q_mask, other=0.0)
    for t in range(t_lo, t_hi):
        l0 = tl.multiple_of(t * BLOCK_L, BLOCK_L)
        offs_l = tl.max_contiguous(tl.multiple_of(l0 + tl.arange(0, BLOCK_L), BLOCK_L), BLOCK_L)
        acc = tl.zeros((BLOCK_M, BLOCK_L), tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + cols_c
            if Q_ONCE:
                a = q_once
            elif EVEN_C:
                a = tl.load(q_base + offs_m[:, None] * sq_m + offs_c[None, :] * sq_c, mask=row_ok[:, None],
                            other=0.0)
            else:
                a = tl.load(q_base + offs_m[:, None] * sq_m + offs_c[None, :] * sq_c,
                            mask=row_ok[:, None] & (offs_c[None, :] < C), other=0.0)
            k_ptrs = k_base + offs_c[:, None] * sk_c + offs_l[None, :] * sk_l
            if EVEN_L and EVEN_C:
                kk = tl.load(k_ptrs)
            elif EVEN_C:
                kk = tl.load(k_ptrs, mask=offs_l[None, :] < L, other=0.0)
            elif EVEN_L:
                kk = tl.load(k_ptrs, mask=offs_c[:, None] < C, other=0.0)
            else:
                kk = tl.load(k_ptrs, mask=(offs_c[:, None] < C) & (offs_l[None, :] < L), other=0.0)
            if UPCAST:  # the interpreter only: it cannot multiply bf16 (see the docstring)
                acc = tl.dot(a.to(tl.float32), kk.to(tl.float32), acc, input_precision="ieee")
            elif IEEE:
                acc = tl.dot(a, kk, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, kk, acc)
        ok = offs_l < n_len
        if HAS_VALID:  # bounded by L, not n_len: vector loads
            va_ptrs = valid_ptr + b * sva_b + offs_l * sva_l
            if EVEN_L:
                ok = ok & (tl.load(va_ptrs) != 0)
            else:
                ok = ok & (tl.load(va_ptrs, mask=offs_l < L, other=0) != 0)
        cand_v = tl.where(ok[None, :], acc, NEG_INF)
        top_v, top_i = _merge_topk(top_v, top_i, cand_v, l0, TOPK, K_PAD, BLOCK_L, True)
    if FUSED:
        _softmax_aggregate(top_v, top_i, v_ptr + b * sv_b, out_ptr + b * so_b, offs_m, row_ok, N, sv_n, sv_l,
                           so_n, so_m, TOPK, K_PAD)
    else:
        out_off = b * sp_b + split * sp_s + offs_m[:, None] * sp_m + slots[None, :]
        tl.store(pv_ptr + out_off, top_v, mask=row_ok[:, None])
        tl.store(pi_ptr + out_off, top_i, mask=row_ok[:, None])


@triton.jit
def _merge_kernel(
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
    _softmax_aggregate(top_v, top_i, v_ptr + b * sv_b, out_ptr + b * so_b, offs_m, row_ok, N, sv_n, sv_l,
                       so_n, so_m, TOPK, K_PAD)


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


def wave_splits(programs: int, tiles: int, multiprocessors: int, per_sm: int = PROGRAMS_PER_SM) -> int:
    """Memory splits for ``programs`` (query blocks x lanes) over ``tiles`` key tiles:
    the fewest splits whose programs fill their waves (multiprocessors x per_sm
    resident programs) to >= 90% (else the best filling), each split keeping at least
    MIN_TILES_PER_SPLIT tiles; never more than MAX_SPLITS."""
    slots = max(1, multiprocessors * per_sm)
    most = max(1, min(MAX_SPLITS, tiles // MIN_TILES_PER_SPLIT))
    best, best_fill = 1, 0.0
    for splits in range(1, most + 1):
        n = programs * splits
        fill = n / (math.ceil(n / slots) * slots)
        if fill >= 0.9:
            return splits
        if fill > best_fill + 1e-9:
            best, best_fill = splits, fill
    return best


def topk_readout_triton(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        valid: torch.Tensor | None, top_k: int | None, *, lengths: torch.Tensor | None = None,
                        block_m: int | None = None, block_l: int | None = None, block_c: int | None = None,
                        splits: int | None = None, num_warps: int | None = None,
                        num_stages: int | None = None) -> torch.Tensor:
    """The fused readout. query (B, C, M), keys (B, C, L) in the key dtype (fp16/bf16;
    fp32 runs IEEE fp32 products), values (B, N, L) float32/float16, valid (B, L) bool or
    None, lengths (B,) int32 or None (lane b reads positions [0, lengths[b]) only),
    1 <= top_k <= TRITON_MAX_TOP_K (None: use the torch path) -> (B, N, M) float32.

    block_*, splits, num_warps, num_stages: tuning knobs (benchmarks/readout_kernel.py);
    None: :func:`default_config` of the key dtype, splits :func:`wave_splits`. Never
    synchronizes with the device (capturable)."""
    check_readout_args(query, keys, values, valid, top_k, lengths)
    cfg = default_config(keys.dtype)
    block_m = cfg["block_m"] if block_m is None else block_m
    block_l = cfg["block_l"] if block_l is None else block_l
    block_c = cfg["block_c"] if block_c is None else block_c
    num_warps = cfg["num_warps"] if num_warps is None else num_warps
    num_stages = cfg["num_stages"] if num_stages is None else num_stages
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
    if length == 0 or c == 0:
        return out.zero_()
    block_c = min(block_c, max(16, _pow2(c)))  # a small C: one product step, the query loaded once
    if query.stride(1) != 1 and c > 1:  # load query blocks along C (see the module docstring)
        query = query.transpose(1, 2).contiguous().transpose(1, 2)
    k_pad = _pow2(max(top_k, 2))
    m_blocks = triton.cdiv(m, block_m)
    tiles = triton.cdiv(length, block_l)
    if splits is None:
        splits = wave_splits(b * m_blocks, tiles, _multiprocessors(device))
    splits = max(1, min(int(splits), tiles, MAX_SPLITS))
    fused = splits == 1
    if fused:  # no scratch: dummy pointers, never dereferenced
        part_v, part_i, sp = out, out, (0, 0, 0)
    else:
        part_v = torch.empty(b, splits, m, k_pad, dtype=torch.float32, device=device)
        part_i = torch.empty(b, splits, m, k_pad, dtype=torch.int32, device=device)
        sp = part_v.stride()[:3]
    valid_arg = valid.view(torch.uint8) if valid is not None else out
    sva = valid_arg.stride() if valid is not None else (0, 0)
    len_arg = lengths.contiguous() if lengths is not None else out
    _readout_kernel[(m_blocks, splits, b)](
        query, keys, valid_arg, len_arg, values, out, part_v, part_i,
        c, m, length, n,
        query.stride(0), query.stride(1), query.stride(2),
        keys.stride(0), keys.stride(1), keys.stride(2),
        sva[0], sva[1],
        values.stride(0), values.stride(1), values.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        sp[0], sp[1], sp[2],
        HAS_VALID=valid is not None, HAS_LEN=lengths is not None, FUSED=fused, Q_ONCE=c <= block_c,
        EVEN_C=c % block_c == 0, EVEN_L=length % block_l == 0,
        IEEE=keys.dtype == torch.float32, UPCAST=keys.dtype == torch.bfloat16 and interpreted(),
        TOPK=top_k, K_PAD=k_pad, BLOCK_M=block_m, BLOCK_L=block_l, BLOCK_C=block_c,
        num_warps=num_warps, num_stages=num_stages,
    )
    if fused:
        return out
    splits_pad = _pow2(splits)
    _merge_kernel[(triton.cdiv(m, MERGE_BLOCK_M), b)](
        part_v, part_i, values, out,
        m, n, splits,
        sp[0], sp[1], sp[2],
        values.stride(0), values.stride(1), values.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        TOPK=top_k, K_PAD=k_pad, SPLITS_PAD=splits_pad, BLOCK_M=MERGE_BLOCK_M,
        num_warps=4 if splits_pad * k_pad <= 256 else 8,
    )
    return out
