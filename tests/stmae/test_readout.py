"""Memory readout: top-k against a dense reference, numerical stability, shapes."""

from __future__ import annotations

import pytest
import torch

from stmae.readout import read_memory, readout, similarity


def dense_reference(keys, values, query, top_k):
    """The published formulation in float64: affinity matrix with zeros off the top-k."""
    sim = keys.double().transpose(1, 2) @ query.double()  # (B, L, M)
    if top_k is not None and top_k < sim.shape[1]:
        vals, idx = sim.topk(top_k, dim=1)
        aff = torch.zeros_like(sim).scatter_(1, idx, torch.softmax(vals, dim=1))
    else:
        aff = torch.softmax(sim, dim=1)
    return values.double() @ aff


@pytest.mark.parametrize("top_k", [1, 5, 30, None])
def test_topk_readout_matches_dense_reference(top_k):
    g = torch.Generator().manual_seed(top_k or 0)
    keys = torch.randn(2, 16, 60, generator=g) * 0.7
    query = torch.randn(2, 16, 12, generator=g) * 0.7
    values = torch.rand(2, 3, 60, generator=g)
    out = readout(keys, values, query, top_k)
    ref = dense_reference(keys, values, query, top_k)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, atol=1e-5)
    if top_k == 5:  # top-k must actually matter at this scale
        assert (dense_reference(keys, values, query, None) - ref).abs().max() > 1e-2


def test_readout_is_stable_at_large_similarities():
    """Similarities of ~1e3 overflow a softmax that does not subtract the maximum."""
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(1, 1024, 40, generator=g)
    query = keys[:, :, :10] + 0.1 * torch.randn(1, 1024, 10, generator=g)
    values = torch.rand(1, 2, 40, generator=g)
    assert (keys.transpose(1, 2) @ query).max() > 500
    assert torch.isnan(torch.exp(keys.transpose(1, 2) @ query)).logical_or(
        torch.isinf(torch.exp(keys.transpose(1, 2) @ query))
    ).any()
    for k in (30, None):
        out = readout(keys, values, query, k)
        assert torch.isfinite(out).all()
        assert torch.allclose(out.double(), dense_reference(keys, values, query, k), atol=1e-5)


def test_half_precision_keys_are_read_in_float32():
    keys = torch.randn(1, 8, 20).half()
    query = torch.randn(1, 8, 6).half()
    values = torch.rand(1, 2, 20)
    out = readout(keys, values, query, 5)
    assert out.dtype == torch.float32


def test_read_memory_shapes_and_errors():
    q = torch.randn(1, 8, 3, 4)
    keys = torch.randn(1, 8, 24)
    values = torch.rand(1, 2, 24)
    assert read_memory(q, keys, values, 4).shape == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="memory keys"):
        read_memory(q, torch.randn(1, 7, 24), values)
    with pytest.raises(ValueError, match="memory values"):
        read_memory(q, keys, torch.rand(1, 2, 23))
    with pytest.raises(ValueError, match="top_k must be positive"):
        read_memory(q, keys, values, 0)


@pytest.mark.parametrize("top_k", [5, None])
def test_readout_ignores_autocast(top_k):
    """AMP training: under CPU bf16 autocast the readout must still compute in float32,
    bit for bit what it computes outside autocast (bmm would otherwise run in bf16)."""
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(2, 64, 40, generator=g) * 4  # similarities in the hundreds
    query = torch.randn(2, 64, 9, generator=g) * 4
    values = torch.rand(2, 3, 40, generator=g)
    want_sim = similarity(keys, query)
    want = readout(keys, values, query, top_k)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sim = similarity(keys, query)
        out = readout(keys, values, query, top_k)
        coarse = read_memory(query.view(2, 64, 3, 3), keys, values, top_k)
    assert sim.dtype == torch.float32
    assert torch.equal(sim, want_sim)
    assert out.dtype == torch.float32 and torch.equal(out, want)
    assert torch.equal(coarse.flatten(2), want)


def test_half_keys_similarity_is_exact_products_accumulated_in_float32():
    """fp16/bf16 keys (CPU path: exact upcast) give the float32 product of the rounded keys."""
    g = torch.Generator().manual_seed(4)
    for dtype in (torch.float16, torch.bfloat16):
        keys = (torch.randn(1, 32, 30, generator=g) * 3).to(dtype)
        query = (torch.randn(1, 32, 7, generator=g) * 3).to(dtype)
        sim = similarity(keys, query)
        assert sim.dtype == torch.float32
        ref = query.double().transpose(1, 2) @ keys.double()
        assert torch.allclose(sim.double(), ref, atol=1e-3)


def test_key_dtype_product_only_where_no_gradient_is_needed(monkeypatch):
    """bmm's out_dtype overload (fp16/bf16 in, fp32 out) has no derivative: training must
    take the upcast path. The meta device stands in for CUDA (it has the overload)."""
    import stmae.readout as readout_mod

    monkeypatch.setattr(readout_mod, "OUT_DTYPE_DEVICES", ("cuda", "meta"))
    keys = torch.empty(1, 8, 20, dtype=torch.float16, device="meta")
    query = torch.empty(1, 8, 6, dtype=torch.float16, device="meta")
    assert readout_mod.key_dtype_bmm_supported(query, keys)
    with torch.inference_mode():
        assert similarity(keys, query).dtype == torch.float32
    keys.requires_grad_(True)
    assert not readout_mod.key_dtype_bmm_supported(query, keys)
    sim = similarity(keys, query)
    sim.sum().backward()  # the out_dtype overload would raise "derivative ... not implemented"
    assert sim.dtype == torch.float32 and keys.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_key_dtype_similarity_on_cuda_matches_the_upcast_product():  # pragma: no cover - GPU only
    import stmae.readout as readout_mod

    for dtype in (torch.float16, torch.bfloat16):
        keys = (torch.randn(2, 256, 3000, device="cuda") * 2).to(dtype)
        query = (torch.randn(2, 256, 400, device="cuda") * 2).to(dtype)
        assert readout_mod.key_dtype_bmm_supported(query, keys)
        sim = similarity(keys, query)
        ref = torch.bmm(query.transpose(1, 2).double(), keys.double())
        assert sim.dtype == torch.float32
        assert float((sim.double() - ref).abs().max()) < 1e-2


def test_cpu_bf16_products_rounds_operands_and_restores_the_mode():
    """Under the switch a float32 CPU similarity equals the product of bf16-rounded
    operands with float32 accumulation (on CPUs whose oneDNN has bf16), the previous
    mode comes back on exit (also after an error), and enabled=False changes nothing."""
    from stmae.readout import cpu_bf16_products

    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    g = torch.Generator().manual_seed(0)
    query = torch.randn(1, 256, 300, generator=g).relu()
    keys = torch.randn(1, 256, 900, generator=g).relu()
    exact = torch.bmm(query.double().transpose(1, 2), keys.double())
    rounded = torch.bmm(query.bfloat16().double().transpose(1, 2), keys.bfloat16().double())
    with cpu_bf16_products(False):
        assert matmul.fp32_precision == before
        off = similarity(keys, query)
    torch.testing.assert_close(off.double(), exact, rtol=1e-5, atol=1e-4)
    with pytest.raises(RuntimeError):
        with cpu_bf16_products():
            assert matmul.fp32_precision == "bf16"
            on = similarity(keys, query)
            raise RuntimeError("inside")
    assert matmul.fp32_precision == before
    assert on.dtype == torch.float32
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU's oneDNN has no bf16: the switch leaves float32 products")
    if (on.double() - exact).abs().max() <= 4 * (off.double() - exact).abs().max():
        # e.g. AMD Zen 4: AVX512-BF16 but no AMX, and oneDNN keeps its float32 kernel
        pytest.skip("this CPU's oneDNN keeps float32 products under the bf16 switch (the documented fallback)")
    torch.testing.assert_close(on.double(), rounded, rtol=1e-5, atol=1e-3)
    assert (on.double() - exact).abs().max() > 10 * (off.double() - exact).abs().max()


def test_channel_softmax_equals_softmax():
    from stmae.aggregate import channel_softmax

    x = torch.randn(2, 4, 8, 9) * 30
    x[0, 1] = float("-inf")  # a masked channel reads 0
    torch.testing.assert_close(channel_softmax(x), torch.softmax(x, dim=1), rtol=1e-6, atol=1e-7)
