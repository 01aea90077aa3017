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

    def reset(self) -> None:
        self.samples.clear()

    def summary(self) -> dict[str, LatencyStats]:
        return {name: LatencyStats.of(values) for name, values in self.samples.items()}
