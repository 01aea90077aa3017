"""Latency statistics and a stage timer."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

STAGES = (
    "decode",
    "preprocess",
    "key_encoder",
    "memory_readout",
    "mask_autoencoder",
    "postprocess",
    "encode",
)


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds: p50/p90/p99/mean over ``count`` samples."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def of(cls, seconds: list[float]) -> "LatencyStats":
        if not seconds:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(len(ms), float(p50), float(p90), float(p99), float(ms.mean()))


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class StageTimer:
    """Accumulates wall-clock seconds per named stage; synchronizes the device around each
    stage so asynchronous GPU work is charged to the stage that queued it."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._sync = synchronizer(torch.device(device))
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.enabled = True
        self._frame_starts: list[dict[str, int]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.samples[name].append(time.perf_counter() - start)

    def begin_frame(self) -> None:
        """Mark the start of a frame: stages timed until the next mark belong to it."""
        self._frame_starts.append({k: len(v) for k, v in self.samples.items()})

    def frame_totals(self) -> list[dict[str, float]]:
        """Seconds per stage summed within each marked frame (a stage may run several
        times in one frame, e.g. a memory read and a memory write)."""
        ends = self._frame_starts[1:] + [{k: len(v) for k, v in self.samples.items()}]
        return [
            {k: sum(v[start.get(k, 0) : end.get(k, 0)]) for k, v in self.samples.items()}
            for start, end in zip(self._frame_starts, ends)
        ]

    def per_frame_summary(self, skip: int = 0) -> dict[str, dict]:
        """LatencyStats (as dicts, ms) of the per-frame stage totals, leaving out the first
        ``skip`` frames; stages that never ran are left out."""
        rows = self.frame_totals()[skip:]
        out = {}
        for name in STAGES:
            values = [row.get(name, 0.0) for row in rows]
            if any(values):
                out[name] = LatencyStats.of(values).__dict__
        return out
