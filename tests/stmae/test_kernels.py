"""The batched, masked top-k readout: torch reference, dispatcher, Triton kernel (under the
interpreter, in a subprocess) and the key-precision agreement measure."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stmae.kernels import choose_backend, topk_readout, topk_readout_torch
from stmae.kernels.agreement import set_overlap, topk_set_agreement
from stmae.readout import readout

ROOT = Path(__file__).resolve().parents[2]


def _case(seed=0, b=3, c=16, m=10, length=50, n=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, m, generator=g), torch.randn(b, c, length, generator=g),
            torch.rand(b, n, length, generator=g), g)


@pytest.mark.parametrize("top_k", [1, 7, 30, None])
def test_unmasked_equals_the_readout(top_k):
    query, keys, values, _ = _case()
    got = topk_readout_torch(query, keys, values, None, top_k)
    assert got.dtype == torch.float32 and got.shape == (3, 2, 10)
    assert torch.allclose(got, readout(keys, values, query, top_k), atol=1e-6)


@pytest.mark.parametrize("top_k", [4, 30, None])
def test_masked_equals_the_readout_over_valid_positions_only(top_k):
    query, keys, values, g = _case(seed=1)
    valid = torch.rand(3, 50, generator=g) > 0.4
    valid[2] = False
    valid[2, :3] = True  # fewer valid positions than top_k
    got = topk_readout_torch(query, keys, values, valid, top_k)
    for s in range(3):
        sel = valid[s]
        want = readout(keys[s:s + 1, :, sel], values[s:s + 1, :, sel], query[s:s + 1], top_k)
        assert torch.allclose(got[s:s + 1], want, atol=1e-6), s


def test_stream_without_memory_reads_zeros_not_nan():
    query, keys, values, _ = _case(seed=2)
    valid = torch.ones(3, 50, dtype=torch.bool)
    valid[1] = False
    for top_k in (5, None):
        got = topk_readout_torch(query, keys, values, valid, top_k)
        assert torch.isfinite(got).all()
        assert torch.equal(got[1], torch.zeros_like(got[1]))


def test_half_keys_and_values_read_in_float32():
    query, keys, values, _ = _case(seed=3)
    for dtype in (torch.float16, torch.bfloat16):
        got = topk_readout_torch(query.to(dtype), keys.to(dtype), values.half(), None, 5)
        want = readout(keys.to(dtype).float(), values.half().float(), query.to(dtype).float(), 5)
        assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)


def test_reference_ignores_autocast():
    query, keys, values, _ = _case(seed=4)
    want = topk_readout_torch(query * 5, keys * 5, values, None, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = topk_readout_torch(query * 5, keys * 5, values, None, 5)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_blocks_of_query_rows_give_the_same_result(monkeypatch):
    import stmae.kernels.topk as mod

    query, keys, values, _ = _case(seed=5, m=37)
    want = topk_readout_torch(query, keys, values, None, 6)
    monkeypatch.setattr(mod, "_CHUNK_ELEMENTS", 3 * 50 * 4)  # 4 rows per block
    # bmm of 4 rows may round differently from bmm of 37 (seen: 1.2e-7): not bit-equal.
    torch.testing.assert_close(topk_readout_torch(query, keys, values, None, 6), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("top_k", [5, None])
@pytest.mark.parametrize("capturing", [False, True])
def test_prefix_readout_equals_the_full_masked_readout(monkeypatch, top_k, capturing):
    """Per-lane counts (0, full, inside the memory, 1) read exactly what the full readout
    reads with the mask built from the counts, and what the readout of each lane's prefix
    alone reads; with and without another mask. capturing: as inside a CUDA graph capture
    (the host may not read the counts), where the counts become a mask, not a slice."""
    import stmae.kernels.topk as mod

    if capturing:
        monkeypatch.setattr(mod, "host_may_read", lambda t: False)
    query, keys, values, g = _case(seed=7, b=5, length=64)
    lengths = torch.tensor([0, 64, 17, 33, 1], dtype=torch.int32)
    inside = torch.arange(64)[None, :] < lengths[:, None]
    other = torch.rand(5, 64, generator=g) > 0.3
    for valid in (None, other):
        got = topk_readout_torch(query, keys, values, valid, top_k, lengths)
        full = inside if valid is None else valid & inside
        want = topk_readout_torch(query, keys, values, full, top_k)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert torch.equal(got[0], torch.zeros_like(got[0]))  # count 0 reads zeros
        for s in range(1, 5):
            sel = full[s].nonzero().flatten()
            alone = readout(keys[s:s + 1, :, sel], values[s:s + 1, :, sel], query[s:s + 1], top_k)
            torch.testing.assert_close(got[s:s + 1], alone, rtol=0, atol=1e-6)
    # Counts past the memory read all of it; negative counts read nothing.
    wide = topk_readout_torch(query, keys, values, None, top_k, torch.tensor([99, -3, 64, 0, 5], dtype=torch.int32))
    torch.testing.assert_close(wide[0], topk_readout_torch(query, keys, values, None, top_k)[0], rtol=0, atol=1e-6)
    assert torch.equal(wide[1], torch.zeros_like(wide[1]))


def test_prefix_slices_the_memory_unless_capturing(monkeypatch):
    """Outside a capture the torch path multiplies only the longest prefix (the empty end
    of every lane's memory is never read); inside one it keeps the shape and masks."""
    import stmae.kernels.topk as mod

    seen = []
    real_similarity = mod.similarity

    def spy(keys, query):
        seen.append(keys.shape[-1])
        return real_similarity(keys, query)

    monkeypatch.setattr(mod, "similarity", spy)
    query, keys, values, _ = _case(seed=8, length=64)
    lengths = torch.tensor([16, 40, 3], dtype=torch.int32)
    topk_readout_torch(query, keys, values, None, 5, lengths)
    monkeypatch.setattr(mod, "host_may_read", lambda t: False)
    topk_readout_torch(query, keys, values, None, 5, lengths)
    assert seen == [40, 64]


def test_bad_arguments_are_refused():
    query, keys, values, _ = _case()
    with pytest.raises(ValueError, match="keys"):
        topk_readout_torch(query, keys[:, :8], values, None, 5)
    with pytest.raises(ValueError, match="values"):
        topk_readout_torch(query, keys, values[:, :, :40], None, 5)
    with pytest.raises(ValueError, match="valid must be"):
        topk_readout_torch(query, keys, values, torch.ones(3, 49, dtype=torch.bool), 5)
    with pytest.raises(ValueError, match="top_k"):
        topk_readout_torch(query, keys, values, None, 0)
    with pytest.raises(ValueError, match="backend"):
        topk_readout(query, keys, values, None, 5, backend="cuda")
    with pytest.raises(ValueError, match="lengths must be"):
        topk_readout_torch(query, keys, values, None, 5, torch.tensor([1, 2, 3]))  # int64
    with pytest.raises(ValueError, match="lengths must be"):
        topk_readout_torch(query, keys, values, None, 5, torch.tensor([1, 2], dtype=torch.int32))


def test_dispatcher_picks_triton_only_on_cuda_with_triton(monkeypatch):
    import stmae.kernels.topk as mod

    cuda = SimpleNamespace(device=torch.device("cuda", 0))
    cpu = torch.zeros(1, 1, 1)
    monkeypatch.setattr(mod, "triton_available", lambda: True)
    assert choose_backend(cuda, 30) == "triton"
    assert choose_backend(cuda, None) == "torch"  # softmax over all of memory: torch
    assert choose_backend(cuda, mod.TRITON_MAX_TOP_K + 1) == "torch"
    assert choose_backend(cpu, 30) == "torch"
    assert choose_backend(cpu, 30, "triton") == "triton"
    assert choose_backend(cuda, 30, needs_grad=True) == "torch"  # the kernel has no backward
    with pytest.raises(ValueError, match="no backward"):
        choose_backend(cuda, 30, "triton", needs_grad=True)
    monkeypatch.setattr(mod, "triton_available", lambda: False)
    assert choose_backend(cuda, 30) == "torch"
    query, keys, values, _ = _case()
    assert torch.equal(topk_readout(query, keys, values, None, 5), topk_readout_torch(query, keys, values, None, 5))
    lengths = torch.tensor([50, 7, 0], dtype=torch.int32)
    assert torch.equal(topk_readout(query, keys, values, None, 5, lengths=lengths),
                       topk_readout_torch(query, keys, values, None, 5, lengths))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed here")
def test_triton_kernel_under_the_interpreter_matches_the_reference():
    """TRITON_INTERPRET must be set before triton is imported, so the check runs in a
    subprocess (tests/stmae/interpret_readout_case.py): fp32/fp16/bf16 keys, masks, fewer
    valid positions than k, an empty stream, several memory splits and one (fused), and
    per-lane counts of readable positions (0, full, whole slots, inside a slot) in the
    engine's padded slot layout against the full masked readout; same top-k sets (one-hot
    values expose them) and values within 1e-4."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests/stmae/interpret_readout_case.py")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == 10, proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed here")
def test_splits_fill_whole_waves():
    from stmae.kernels.triton_readout import MAX_SPLITS, wave_splits

    # One 480p stream (26 blocks of 64 rows) on 132 SMs x 2: 10 splits fill 260 of 264.
    assert wave_splits(26, 536, 132, 2) == 10
    # 16 streams (416 programs): 1 split fills 79% of 2 waves, 3 splits 95% of 5.
    assert wave_splits(416, 536, 132, 2) == 3
    assert wave_splits(26, 8, 132, 2) == 2  # at least 4 tiles per split
    assert wave_splits(1, 10_000, 1000, 1) == MAX_SPLITS
    assert wave_splits(264, 536, 132, 2) == 1  # already whole waves


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed here")
def test_triton_kernel_on_cuda_matches_the_reference():  # pragma: no cover - GPU only
    from stmae.kernels.triton_readout import topk_readout_triton

    g = torch.Generator(device="cuda").manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        query = torch.randn(4, 256, 300, device="cuda", generator=g).to(dtype)
        keys = torch.randn(4, 256, 3008, device="cuda", generator=g).to(dtype)
        values = torch.rand(4, 3, 3008, device="cuda", generator=g)
        valid = torch.rand(4, 3008, device="cuda", generator=g) > 0.3
        lengths = torch.tensor([0, 3008, 1504, 700], dtype=torch.int32, device="cuda")
        for splits in (None, 1):
            got = topk_readout_triton(query, keys, values, valid, 30, lengths=lengths, splits=splits)
            want = topk_readout_torch(query, keys, values, valid, 30, lengths)
            assert float((got - want).abs().max()) < 2e-3, (dtype, splits)


def test_agreement_is_total_for_float32_and_measured_for_half():
    query, keys, values, _ = _case(seed=6, c=64, m=40, length=300)
    same = topk_set_agreement(query, keys, 30, torch.float32, values)
    assert same.identical == 1.0 and same.overlap == 1.0 and same.max_abs_sim_error == 0.0
    assert same.max_abs_readout_error == 0.0 and same.rows == 3 * 40
    half = topk_set_agreement(query * 30, keys * 30, 30, torch.bfloat16, values)
    assert 0.0 < half.overlap <= 1.0 and half.max_abs_sim_error > 0


def test_agreement_counts_a_set_changed_by_rounding():
    """Two memory positions whose similarities differ by less than bf16 can resolve: the
    k-th place swaps in bf16, and exactly that row loses one of its k members."""
    keys = torch.zeros(1, 2, 4)
    keys[0, 0] = torch.tensor([10.0, 9.0, 1.0 + 2 ** -10, 1.0])  # positions 2 and 3 round equal in bf16
    keys[0, 1] = torch.tensor([0.0, 0.0, 0.0, 0.5])  # ... but position 3 wins once rounded
    query = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])  # row 0 -> sims 10, 9, 1+2^-10, 1; row 1 -> 0 0 0 .5
    got = topk_set_agreement(query, keys, 3, torch.bfloat16)
    assert got.rows == 2 and got.identical == 0.5
    assert got.min_overlap == pytest.approx(2 / 3)
    assert set_overlap(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 3]])).item() == pytest.approx(2 / 3)


def _ptxas():
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return path if path.is_file() else None


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed here")
def test_triton_kernels_compile_for_a_hopper_gpu_with_vector_loads_and_no_spills():
    """The interpreter accepts Python that the compiler refuses (e.g. a plain float global
    in a kernel) and ignores load hints, so both kernels are also compiled ahead of time
    for sm_90 (H100/H200) with triton's own toolchain, which needs no GPU, specialized as
    the engine launches them (memory row strides and L multiples of 16, unit strides along
    L and along C of the query). For the default configuration: ptxas reports no register
    spills; two programs fit on a multiprocessor (registers and shared memory, as
    PROGRAMS_PER_SM assumes); the key and query tiles load with 16-byte asynchronous
    copies: without a valid mask and scratch output, the lane's count is the only other
    global load of the kernel."""
    import re

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from stmae.kernels import triton_readout as tr

    if _ptxas() is None:
        pytest.skip("this triton wheel has no NVIDIA toolchain (ptxas)")

    def compile_(kernel, pointers, constexprs, num_warps, num_stages, divisible=()):
        sig = {a: ("constexpr" if a in constexprs else pointers.get(a, "i32")) for a in kernel.arg_names}
        attrs = {(kernel.arg_names.index(a),): [["tt.divisibility", 16]] for a in divisible}
        return triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})

    def ptxas_info(compiled) -> str:
        ptx = Path(os.environ.get("TMPDIR", "/tmp")) / f"stmae-readout-{os.getpid()}.ptx"
        ptx.write_text(compiled.asm["ptx"])
        try:
            out = subprocess.run([str(_ptxas()), "-v", "--gpu-name=sm_90a", str(ptx), "-o", os.devnull],
                                 capture_output=True, text=True, timeout=120)
        finally:
            ptx.unlink(missing_ok=True)
        assert out.returncode == 0, out.stderr
        return out.stderr

    divisible = ("q_ptr", "k_ptr", "valid_ptr", "len_ptr", "v_ptr", "out_ptr", "pv_ptr", "pi_ptr",
                 "C", "L", "sq_b", "sq_m", "sk_b", "sk_c", "sva_b", "sv_b", "sv_n", "so_b", "so_n",
                 "sp_b", "sp_s", "sp_m")
    for dtype, torch_dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        cfg = tr.default_config(torch_dtype)
        pointers = {"q_ptr": f"*{dtype}", "k_ptr": f"*{dtype}", "valid_ptr": "*u8", "len_ptr": "*i32",
                    "v_ptr": "*fp32", "out_ptr": "*fp32", "pv_ptr": "*fp32", "pi_ptr": "*i32"}
        for fused, has_valid in ((False, True), (True, True), (False, False)):
            consts = {"HAS_VALID": has_valid, "HAS_LEN": True, "FUSED": fused, "Q_ONCE": False, "EVEN_C": True,
                      "EVEN_L": False, "IEEE": dtype == "fp32", "UPCAST": False, "TOPK": 30, "K_PAD": 32,
                      "BLOCK_M": cfg["block_m"], "BLOCK_L": cfg["block_l"], "BLOCK_C": cfg["block_c"],
                      "sq_c": 1, "sk_l": 1, "sva_l": 1, "sv_l": 1, "so_m": 1}
            compiled = compile_(tr._readout_kernel, pointers, consts, cfg["num_warps"], cfg["num_stages"],
                                tuple(a for a in divisible if a not in consts))
            info = ptxas_info(compiled)
            name = f"{dtype} fused={fused} valid={has_valid}"
            assert "0 bytes spill stores" in info, (name, info)
            regs = int(re.search(r"Used (\d+) registers", info).group(1))
            per_program = -(-regs // 8) * 8 * 32 * cfg["num_warps"]  # allocated per warp in units of 8 per thread
            assert per_program * tr.PROGRAMS_PER_SM <= 65536, (name, regs)
            assert compiled.metadata.shared * tr.PROGRAMS_PER_SM <= 227 * 1024, (name, compiled.metadata.shared)
            ptx = compiled.asm["ptx"]
            copies = re.findall(r"cp\.async\.cg\.shared\.global \[[^\]]+\], \[[^\]]+\], 0x10", ptx)
            tile_bytes = (cfg["block_m"] + cfg["block_l"]) * cfg["block_c"] * (4 if dtype == "fp32" else 2)
            # Per pipeline stage, each of the 32 x num_warps threads copies 16 bytes at a time.
            per_stage = tile_bytes // (16 * 32 * cfg["num_warps"])
            assert len(copies) >= per_stage, (name, len(copies))
            if not has_valid:
                assert len(re.findall(r"ld\.global", ptx)) == 1, name  # the count; no scalar key/query load
    pointers = {"pv_ptr": "*fp32", "pi_ptr": "*i32", "v_ptr": "*fp32", "out_ptr": "*fp32"}
    info = ptxas_info(compile_(tr._merge_kernel, pointers, {"TOPK": 30, "K_PAD": 32, "SPLITS_PAD": 16,
                                                            "BLOCK_M": tr.MERGE_BLOCK_M}, 8, 2))
    assert "0 bytes spill stores" in info, info
