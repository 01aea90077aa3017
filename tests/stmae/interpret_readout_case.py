"""Run by tests/stmae/test_kernels.py in a subprocess with TRITON_INTERPRET=1 (the Triton
interpreter must be chosen before triton is imported): the fused Triton readout against
the float32 torch reference, at tiny sizes. Prints one "ok <case>" line per case; exits
non-zero on a mismatch.

The prefix cases build the engine's memory layout (T slots of P positions padded to
P' = 16, padding never valid) and give each lane a count of readable positions: 0, the
full memory, whole slots and counts inside a slot; the Triton readout with ``lengths``
must equal the torch readout of the full memory with the valid mask built from the
counts (and the torch readout with ``lengths``)."""

from __future__ import annotations

import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402

from stmae.kernels.topk import topk_readout, topk_readout_torch  # noqa: E402
from stmae.kernels.triton_readout import topk_readout_triton  # noqa: E402


def one_hot_values(b: int, length: int) -> torch.Tensor:
    """values[b, n, l] = (n == l): out[b, n, m] is then the weight of position n in row m,
    so the output shows the kept set and the softmax weights themselves."""
    return torch.eye(length).expand(b, length, length).contiguous()


def check(name: str, query, keys, values, valid, top_k, lengths=None, **knobs) -> None:
    got = topk_readout_triton(query, keys, values, valid, top_k, lengths=lengths, **knobs)
    mask = valid
    if lengths is not None:  # the full masked readout: the counts as a mask
        inside = torch.arange(keys.shape[2])[None, :] < lengths[:, None].long()
        mask = inside if valid is None else valid & inside
    ref = topk_readout_torch(query, keys, values, mask, top_k)
    assert got.dtype == torch.float32 and got.shape == ref.shape, (got.dtype, got.shape, ref.shape)
    if lengths is not None:
        assert torch.equal(topk_readout_torch(query, keys, values, valid, top_k, lengths), ref), name
    err = float((got - ref).abs().max())
    if values.shape[1] == keys.shape[2]:  # one-hot values: compare the kept sets
        sim = torch.bmm(query.double().transpose(1, 2), keys.double())
        if mask is not None:
            sim = sim.masked_fill(~mask[:, None, :], float("-inf"))
        k = min(top_k, sim.shape[-1])
        top = torch.topk(sim, k=min(k + 1, sim.shape[-1]), dim=-1).values
        tie = (top[..., k - 1] == top[..., k]) if k < sim.shape[-1] else torch.zeros_like(top[..., 0], dtype=torch.bool)
        kept_got = got.transpose(1, 2) > 0  # (B, M, L)
        kept_ref = ref.transpose(1, 2) > 0
        differ = (kept_got != kept_ref).any(dim=-1) & ~tie
        assert not differ.any(), f"{name}: top-k sets differ in {int(differ.sum())} rows"
    assert err < 1e-4, f"{name}: max |triton - torch| = {err}"
    print(f"ok {name}: max abs err {err:.2e}")


def min_gap(query, keys, mask, k: int) -> float:
    """The smallest float64 gap between the k-th and (k+1)-th valid similarity of any
    row that has more than k valid positions (inf when none has)."""
    sim = torch.bmm(query.double().transpose(1, 2), keys.double()).masked_fill(~mask[:, None, :], float("-inf"))
    top = torch.topk(sim, k=k + 1, dim=-1).values
    gap = (top[..., k - 1] - top[..., k])[torch.isfinite(top[..., k])]
    return float(gap.min()) if gap.numel() else float("inf")


def slot_case(dtype, seed: int, k: int, b: int = 4, c: int = 24, m: int = 12, t: int = 4, p: int = 10,
              stride: int = 16):
    """Memory in the engine's layout: t slots of p key positions in ``stride``; per-lane
    counts 0, full, 2 whole slots and 23 (inside slot 1); keys and queries chosen so that
    no row has a near-tie at its k-th place (gap >= 1e-3), whatever the count."""
    length = t * stride
    real = (torch.arange(length) % stride < p)[None, :].expand(b, length)
    lengths = torch.tensor([0, length, 2 * stride, 23], dtype=torch.int32)[:b]
    inside = torch.arange(length)[None, :] < lengths[:, None].long()
    for attempt in range(100):
        g = torch.Generator().manual_seed(seed + attempt)
        query = torch.randn(b, c, m, generator=g).to(dtype)
        keys = torch.randn(b, c, length, generator=g).to(dtype)
        if min_gap(query, keys, real & inside, k) >= 1e-3:
            return query, keys, real, lengths
    raise AssertionError("no seed without near-ties")


def main() -> int:
    g = torch.Generator().manual_seed(11)
    b, c, m, length, k = 2, 24, 20, 150, 30
    query = torch.randn(b, c, m, generator=g)
    keys = torch.randn(b, c, length, generator=g)
    valid = torch.rand(b, length, generator=g) > 0.25
    valid[1] = False
    valid[1, 40:52] = True  # 12 valid positions < top_k: -inf slots get weight 0
    eye = one_hot_values(b, length)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        check(f"{dtype} masked, 3 splits", query.to(dtype), keys.to(dtype), eye, valid, k,
              block_m=16, block_l=32, block_c=16, splits=3)
    check("float32 no mask, 1 split, k=1", query, keys, eye, None, 1, block_m=16, block_l=64, block_c=16, splits=1)
    check("float16 values, k=7, block_c > C", query.half(), keys.half(), torch.rand(b, 3, length, generator=g).half(),
          valid, 7, block_m=32, block_l=16, block_c=32, splits=2)
    empty = valid.clone()
    empty[0] = False  # a stream slot with nothing written yet reads zeros
    got = topk_readout_triton(query, keys, eye, empty, k, block_m=16, block_l=32, block_c=16, splits=2)
    assert torch.equal(got[0], torch.zeros_like(got[0])), "an empty stream must read zeros"
    check("empty stream", query, keys, eye, empty, k, block_m=16, block_l=32, block_c=16, splits=2)
    # The dispatcher takes Triton when asked to; default knobs (splits chosen by it).
    got = topk_readout(query, keys, eye, valid, k, backend="triton")
    ref = topk_readout_torch(query, keys, eye, valid, k)
    assert float((got - ref).abs().max()) < 1e-4
    print("ok dispatcher backend='triton'")

    # Prefix readout: per-lane counts (0, full, whole slots, inside a slot) in the padded layout.
    q, kk, real, lengths = slot_case(torch.bfloat16, 100, k=8)
    eye64 = one_hot_values(4, kk.shape[2])
    check("prefix counts, bf16, padded slots, 2 splits", q, kk, eye64, real, 8, lengths,
          block_m=16, block_l=16, block_c=16, splits=2)
    got = topk_readout_triton(q, kk, eye64, real, 8, lengths=lengths, block_m=16, block_l=16, block_c=16, splits=2)
    assert torch.equal(got[0], torch.zeros_like(got[0])), "a lane with count 0 must read zeros"
    check("prefix counts, bf16, 1 split (fused)", q, kk, eye64, real, 8, lengths,
          block_m=16, block_l=32, block_c=16, splits=1)
    # Counts alone (no mask), a C-contiguous query (no copy), C a multiple of block_c, L of block_l.
    q, kk, _, lengths = slot_case(torch.float32, 200, k=5, c=32, p=16)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)
    check("prefix counts without mask, C-contiguous query, even tiles", q, kk, torch.rand(4, 2, kk.shape[2]), None,
          5, lengths, block_m=16, block_l=32, block_c=16, splits=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
