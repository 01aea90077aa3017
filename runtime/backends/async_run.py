"""Asynchronous runs of an external library (TensorRT, ONNX Runtime) on a CUDA stream of
their own, ordered with torch's current stream by events, without host synchronisation.

Why a stream of their own: torch's current stream is usually the legacy default stream
(handle 0). TensorRT adds device-wide synchronisations when it is given that stream, and
ONNX Runtime ignores a ``user_compute_stream`` of 0. So each backend owns one non-default
stream; a run

1. ``begin()``: makes that stream wait for the caller's current stream (whatever
   produced the inputs), and returns it;
2. enqueues the library's work on it;
3. ``end(keep)``: records an event, makes the caller's stream wait for it (whatever reads
   the outputs next is ordered after the run), and keeps ``keep`` -- the input and output
   tensors and any scratch memory of the run -- alive until that event has completed.
   Without this, a temporary input freed by Python could be handed by torch's caching
   allocator to other work on the caller's stream while the run still reads it.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

import torch


class AsyncRuns:
    """One non-default CUDA stream on ``device`` plus the tensors of runs still in flight."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self._pending: deque[tuple[torch.cuda.Event, tuple]] = deque()

    @property
    def handle(self) -> int:
        """The stream's cudaStream_t as an int (never 0)."""
        return int(self.stream.cuda_stream)

    def begin(self) -> torch.cuda.Stream:
        """Order the run after the caller's current stream; returns the run's stream."""
        self.release_finished()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        return self.stream

    def end(self, keep: Iterable[object]) -> None:
        """Order the caller's later work after the run; hold ``keep`` until it finishes."""
        event = torch.cuda.Event()
        event.record(self.stream)
        torch.cuda.current_stream(self.device).wait_event(event)
        self._pending.append((event, tuple(keep)))

    def release_finished(self) -> None:
        """Drop the references of runs whose event has completed (no waiting)."""
        while self._pending and self._pending[0][0].query():
            self._pending.popleft()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def synchronize(self) -> None:
        """Wait for every run and release their tensors."""
        self.stream.synchronize()
        self._pending.clear()
