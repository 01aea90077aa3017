"""The Prometheus metrics of one server (prometheus-client, a registry of its own, never
the process-global one, so two servers in one process do not mix).

- ``stmae_serve_frames_total``: frames segmented (its rate is the frames/s);
- ``stmae_serve_step_seconds``: engine step latency (histogram);
- ``stmae_serve_batch_size``: sessions stepped together (histogram);
- ``stmae_serve_queue_depth``: frames queued over all sessions;
- ``stmae_serve_active_sessions``: sessions open;
- ``stmae_serve_dropped_frames_total{reason}``: frames refused or dropped (queue_full,
  bad_input, closed, too_many_sessions, subscriber, source: a server-side source's frames
  the engine had no time for);
- ``stmae_serve_device_memory_bytes``: CUDA memory allocated on a GPU, else the
  process's resident memory.
"""

from __future__ import annotations

import resource
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def _rss_bytes() -> float:
    """The process's resident memory now (Linux: /proc), else its peak (getrusage)."""
    try:
        with open("/proc/self/statm") as fh:
            import os

            return float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if sys.platform == "darwin" else peak * 1024)


class ServeMetrics:
    """The metrics above; ``device``: the engine's device ('cpu', 'cuda', 'cuda:N')."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, device: str = "cpu") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("stmae_serve_frames", "Frames segmented", registry=r)
        self.step_seconds = Histogram("stmae_serve_step_seconds", "Engine step latency in seconds",
                                      buckets=STEP_BUCKETS, registry=r)
        self.batch_size = Histogram("stmae_serve_batch_size", "Sessions stepped together in one engine step",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("stmae_serve_queue_depth", "Frames queued over all sessions", registry=r)
        self.active_sessions = Gauge("stmae_serve_active_sessions", "Sessions open", registry=r)
        self.dropped_frames = Counter("stmae_serve_dropped_frames", "Frames refused or dropped", ["reason"],
                                      registry=r)
        self.device_memory = Gauge("stmae_serve_device_memory_bytes",
                                   "CUDA memory allocated (on a GPU), else the process's resident memory",
                                   registry=r)
        self.device_memory.set_function(self._memory(device))

    @staticmethod
    def _memory(device: str):
        if str(device).startswith("cuda"):
            def cuda() -> float:
                import torch

                return float(torch.cuda.memory_allocated(device))
            return cuda
        return _rss_bytes

    # HubObserver
    def step(self, batch: int, seconds: float) -> None:
        self.frames.inc(batch)
        self.step_seconds.observe(seconds)
        self.batch_size.observe(batch)

    def dropped(self, count: int, reason: str) -> None:
        self.dropped_frames.labels(reason=reason).inc(count)

    def levels(self, sessions: int, queued: int) -> None:
        self.active_sessions.set(sessions)
        self.queue_depth.set(queued)

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
