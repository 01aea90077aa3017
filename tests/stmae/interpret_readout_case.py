"""Run by tests/stmae/test_kernels.py in a subprocess with TRITON_INTERPRET=1 (the Triton
interpreter must be chosen before triton is imported): the fused Triton readout against
the float32 torch reference, at tiny sizes. Prints one line per case; exits non-zero on a
mismatch."""

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


def check(name: str, query, keys, values, valid, top_k, **knobs) -> None:
    got = topk_readout_triton(query, keys, values, valid, top_k, **knobs)
    ref = topk_readout_torch(query, keys, values, valid, top_k)
    assert got.dtype == torch.float32 and got.shape == ref.shape, (got.dtype, got.shape, ref.shape)
    err = float((got - ref).abs().max())
    if values.shape[1] == keys.shape[2]:  # one-hot values: compare the kept sets
        sim = torch.bmm(query.double().transpose(1, 2), keys.double())
        if valid is not None:
            sim = sim.masked_fill(~valid[:, None, :], float("-inf"))
        k = min(top_k, sim.shape[-1])
        top = torch.topk(sim, k=min(k + 1, sim.shape[-1]), dim=-1).values
        tie = (top[..., k - 1] == top[..., k]) if k < sim.shape[-1] else torch.zeros_like(top[..., 0], dtype=torch.bool)
        kept_got = got.transpose(1, 2) > 0  # (B, M, L)
        kept_ref = ref.transpose(1, 2) > 0
        differ = (kept_got != kept_ref).any(dim=-1) & ~tie
        assert not differ.any(), f"{name}: top-k sets differ in {int(differ.sum())} rows"
    assert err < 1e-4, f"{name}: max |triton - torch| = {err}"
    print(f"ok {name}: max abs err {err:.2e}")


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
