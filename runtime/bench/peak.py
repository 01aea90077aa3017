"""The machine's measured peak for a precision: a large matrix product timed in the run."""

from __future__ import annotations

import time

import torch

from .stats import synchronizer


def measure_peak_gflops(device: torch.device | str = "cpu", precision: str = "fp32", size: int | None = None, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n matrix product (2 n^3 FLOP), best of ``repeats``.

    precision: 'fp32' | 'fp16' | 'bf16' | 'int8' (int8 via torch._int_mm, counted as
    2 n^3 integer ops). On the CPU fp16 is timed as bf16 where fp16 GEMM is slow.
    """
    device = torch.device(device)
    n = size or (4096 if device.type == "cuda" else 1024)
    sync = synchronizer(device)
    if precision == "int8":
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)
        op = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if device.type == "cpu" and dtype == torch.float16:
            dtype = torch.bfloat16
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        op = lambda: a @ b  # noqa: E731
    try:
        op()
    except RuntimeError:
        return float("nan")  # the precision has no matrix product on this device
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        op()
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9
