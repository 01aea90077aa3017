"""The memory readout on a CUDA GPU: the torch reference against the fused Triton kernel,
in one run, per frame against the matrix-product floor.

    PYTHONPATH=. python benchmarks/readout_kernel.py --quick [--out readout_kernel.json]
    PYTHONPATH=. python benchmarks/readout_kernel.py [--peak-tflops 989] [--verbose]

Shapes: a 480p frame (query 30x54 = 1,620 positions) against a window of 21 memory
frames in the engine's layout (each frame's 1,620 positions padded to 1,632, so that row
strides are multiples of 16; padding never valid: L = 34,272 stored, 34,020 real), top
30. ``--quick`` (for a GPU check, well under a minute): a full window, 1,024-channel keys,
bf16, 1 object, 1 and 16 streams, the kernel's default configuration (few compilations,
meant to fit the 45 s that benchmarks/gpu_check.sh gives it; not yet timed on a GPU). The full run adds 256-channel
keys, fp16, 4 objects, a window with 3 of 21 frames valid (the per-lane count skips the
rest) and the unpadded layout (L = 34,020: key tiles without vector loads), and tries
three more Triton configurations.

For each shape it prints the median time (CUDA events) of

- ``torch``: :func:`stmae.kernels.topk_readout_torch` (bmm with float32 output over the
  key-dtype keys, torch.topk, softmax, gather; the reference and the fallback);
- ``triton``: :func:`stmae.kernels.triton_readout.topk_readout_triton`, the best of the
  configurations tried (each listed with ``--verbose``),

the Triton time per frame (divided by the streams), the floor per frame, 2*C*M*L FLOPs
(L the valid memory positions) at the GPU's bf16/fp16 matrix-product peak, their ratio,
and the Triton output's max |difference| from torch. The peak is ``--peak-tflops`` (a
datasheet number) or, by default, measured in the same run: the best of a few 8192^3
bf16 cuBLAS products (so the floor is what cuBLAS reaches on this GPU, and the ratio a
like-for-like one). Needs a CUDA GPU and triton; exits 2 without them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from stmae.atomic import atomic_write_text
from runtime.bench.stage_profile import median_ms

AIM_MS_PER_FRAME = 0.3
QUERY_HW = (30, 54)  # 480p at stride 16
MEMORY_FRAMES = 21
ALIGN = 16  # the engine's slot padding on CUDA (runtime.engine.types.EngineOptions.memory_align)
CONFIGS = (  # (block_m, block_l, block_c, num_warps, num_stages); None: the kernel's default
    None,
    (128, 64, 64, 8, 3),
    (64, 128, 64, 8, 3),
    (64, 64, 64, 4, 4),
)


def cuda_time_ms(fn, repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``repeats`` calls (CUDA events) after two warm-up calls."""
    return median_ms(fn, repeats, device, warmup=2)


def measured_peak_tflops(dtype: torch.dtype, device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """The best TFLOP/s of ``repeats`` n^3 cuBLAS products in ``dtype`` (float32 output)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    ms = min(cuda_time_ms(lambda: a @ b, 1, device) for _ in range(repeats))
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def floor_ms(channels: int, query_positions: int, memory_positions: int, peak_tflops: float) -> float:
    """Milliseconds of 2*C*M*L FLOPs at ``peak_tflops``: the similarity product alone."""
    return 2 * channels * query_positions * memory_positions / (peak_tflops * 1e12) * 1e3


def make_case(streams: int, channels: int, objects: int, dtype: torch.dtype, device: torch.device,
              memory_frames: int = MEMORY_FRAMES, valid_frames: int | None = None,
              query_hw: tuple[int, int] = QUERY_HW, align: int = ALIGN):
    """Memory in the engine's layout: ``memory_frames`` slots of M = h*w positions padded
    to a multiple of ``align`` (1: no padding), the first ``valid_frames`` (default all)
    of every stream valid. Random keys scaled like raw ResNet features (similarities in
    the hundreds). Returns query (S, C, M), keys (S, C, L), values (S, N, L), valid
    (S, L) bool (None without padding), lengths (S,) int32 (None for a full window), and
    the count of valid positions per stream."""
    g = torch.Generator(device=device).manual_seed(0)
    m = query_hw[0] * query_hw[1]
    stride = -(-m // align) * align
    valid_frames = memory_frames if valid_frames is None else valid_frames
    keys = torch.zeros(streams, channels, memory_frames, stride, device=device, dtype=dtype)
    keys[..., :m] = (torch.randn(streams, channels, memory_frames, m, device=device, generator=g) * 0.8).to(dtype)
    keys = keys.flatten(2)
    query = (keys[:, :, :m].float() + 0.5 * torch.randn(streams, channels, m, device=device, generator=g)).to(dtype)
    values = torch.rand(streams, objects, memory_frames * stride, device=device, generator=g)
    real = (torch.arange(memory_frames * stride, device=device) % stride) < m
    valid = None if stride == m else real[None, :].expand(streams, -1)
    lengths = None
    if valid_frames < memory_frames:
        lengths = torch.full((streams,), valid_frames * stride, dtype=torch.int32, device=device)
    return query, keys, values, valid, lengths, valid_frames * m


def bench_shape(case: dict, device, repeats, configs, peak_tflops, top_k=30, verbose=False) -> dict:
    from stmae.kernels.topk import topk_readout_torch
    from stmae.kernels.triton_readout import topk_readout_triton

    query, keys, values, valid, lengths, real_positions = make_case(device=device, **case)
    row = {**case, "dtype": str(case["dtype"]).replace("torch.", ""), "memory_positions_stored": keys.shape[-1],
           "memory_positions_valid": real_positions, "query_positions": query.shape[-1], "top_k": top_k}
    row["torch_ms"] = cuda_time_ms(lambda: topk_readout_torch(query, keys, values, valid, top_k, lengths),
                                   repeats, device)
    ref = topk_readout_torch(query, keys, values, valid, top_k, lengths)
    best = None
    for cfg in configs:
        knobs = {} if cfg is None else dict(zip(("block_m", "block_l", "block_c", "num_warps", "num_stages"), cfg))
        fn = lambda: topk_readout_triton(query, keys, values, valid, top_k, lengths=lengths, **knobs)  # noqa: E731
        try:
            ms = cuda_time_ms(fn, repeats, device)
        except Exception as exc:  # a configuration the GPU cannot hold (shared memory, registers)
            if verbose:
                print(f"  config {cfg or 'default'}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
            continue
        if verbose:
            print(f"  config {cfg or 'default'}: {ms:.3f} ms")
        if best is None or ms < best[0]:
            best = (ms, cfg, knobs)
    floor = floor_ms(case["channels"], query.shape[-1], real_positions, peak_tflops)
    row["floor_ms_per_frame"] = floor
    if best is None:
        row["triton_ms"] = None
        return row
    ms, cfg, knobs = best
    out = topk_readout_triton(query, keys, values, valid, top_k, lengths=lengths, **knobs)
    streams = case["streams"]
    row.update(triton_ms=ms, triton_config=cfg and list(cfg), triton_max_abs_diff=float((out - ref).abs().max()),
               ms_per_frame_triton=ms / streams, x_floor=ms / streams / floor, speedup_vs_torch=row["torch_ms"] / ms)
    return row


def shapes(quick: bool) -> list[dict]:
    full = dict(channels=1024, objects=1, dtype=torch.bfloat16)
    rows = [dict(streams=s, **full) for s in (1, 16)]
    if quick:
        return rows
    rows += [dict(streams=s, valid_frames=3, **full) for s in (1, 16)]  # the count skips 18 of 21 frames
    rows += [dict(streams=s, align=1, **full) for s in (1, 16)]  # unpadded: L = 34,020
    rows += [dict(streams=s, channels=256, objects=4, dtype=d)
             for s in (1, 16) for d in (torch.bfloat16, torch.float16)]
    rows += [dict(streams=s, channels=1024, objects=1, dtype=torch.float16) for s in (1, 16)]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="readout_kernel", usage=argparse.SUPPRESS,  # errors: one line
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true",
                   help="full window, C=1024, top 30, 480p, bf16, 1 and 16 streams; the default Triton configuration")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (default 10 with --quick, else 20)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: measured with cuBLAS)")
    p.add_argument("--verbose", action="store_true", help="print every Triton configuration's time")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 10 if args.quick else 20
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        p.error(f"--peak-tflops must be positive, got {args.peak_tflops}")
    if not torch.cuda.is_available():
        print("readout_kernel: error: needs a CUDA GPU (torch.cuda.is_available() is False); run it on the GPU machine",
              file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print("readout_kernel: error: needs triton (it comes with torch's CUDA wheels)", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device)
    if args.peak_tflops is None:
        peak = measured_peak_tflops(torch.bfloat16, device)
        peak_note = f"{peak:.0f} TFLOP/s (bf16 8192^3 cuBLAS product, measured now)"
    else:
        peak, peak_note = args.peak_tflops, f"{args.peak_tflops:.0f} TFLOP/s (--peak-tflops)"
    configs = CONFIGS[:1] if args.quick else CONFIGS
    print(f"device: {name}, torch {torch.__version__}, top-k 30, 480p query (1,620 positions), "
          f"{MEMORY_FRAMES} memory frames (34,020 positions, stored padded to 34,272); peak {peak_note}")
    print("| streams | C | objects | keys | valid frames | layout | torch ms | triton ms | triton ms/frame "
          "| floor ms/frame | x floor | x vs torch | <= 0.3 ms/frame | max |diff| |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for case in shapes(args.quick):
        row = bench_shape(case, device, args.repeats, configs, peak, verbose=args.verbose)
        rows.append(row)
        head = (f"| {row['streams']} | {row['channels']} | {row['objects']} | {row['dtype']} | "
                f"{row.get('valid_frames') or MEMORY_FRAMES} | {'unpadded' if row.get('align') == 1 else 'padded'} | "
                f"{row['torch_ms']:.3f} |")
        if row["triton_ms"] is None:
            print(f"{head} failed | | {row['floor_ms_per_frame']:.3f} | | | | |", flush=True)
            continue
        print(f"{head} {row['triton_ms']:.3f} | {row['ms_per_frame_triton']:.3f} | {row['floor_ms_per_frame']:.3f} | "
              f"{row['x_floor']:.1f} | {row['speedup_vs_torch']:.2f} | "
              f"{'yes' if row['ms_per_frame_triton'] <= AIM_MS_PER_FRAME else 'no'} | "
              f"{row['triton_max_abs_diff']:.2e} |", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps({"device": name, "torch": torch.__version__, "peak_tflops": peak,
                                                "peak": peak_note, "rows": rows}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
