"""Peak memory of a run: process RSS sampled in a thread; on CUDA the allocator's peak."""

from __future__ import annotations

import os
import threading

import torch


def current_rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Context manager: ``peak_rss_mb`` (sampled every ``interval`` s) and, on CUDA,
    ``peak_cuda_mb`` (torch.cuda.max_memory_allocated over the block)."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_rss_mb = 0.0
        self.peak_cuda_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, current_rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._peak = current_rss_bytes()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak = max(self._peak, current_rss_bytes())
        self.peak_rss_mb = self._peak / 2**20
        if self.device.type == "cuda":
            self.peak_cuda_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
