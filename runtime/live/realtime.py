"""Segment a live source as frames arrive.

A capture thread reads the source and stamps each frame with its arrival time on this
host (``time.perf_counter``, after decoding). The segmenter takes frames from:

- real-time mode: a one-frame slot holding the newest frame. A frame the segmenter had
  no time for is replaced by the next one and counted as dropped, so latency stays
  bounded when the network or the segmenter falls behind;
- otherwise: a bounded queue (every frame is segmented; the reader waits when it is full,
  so a network source then lags instead of growing memory).

Latency is measured from a frame's arrival to its label map on the host. Masks (one
atomic PNG per segmented frame, named by the frame's index in the stream, so gaps show
drops) and the overlay video are written behind the network's work. Ctrl-C (or the end of
the stream, ``max_frames`` or ``duration``) ends the loop cleanly: written masks are
whole, the overlay is finished and moved into place, and the statistics are returned.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..backends.base import Backend
from ..config import SessionConfig
from ..errors import InputError
from ..io.mask_io import write_mask
from ..interrupt import checkpoint
from ..io.overlap import BackgroundWriter
from ..io.overlay import OverlayWriter
from ..engine.session import VideoSession

_END = object()


@dataclass(frozen=True)
class Captured:
    """A frame from the source: index in the stream, arrival time (perf_counter, s), RGB
    (H, W, 3) uint8."""

    index: int
    time: float
    frame: np.ndarray


class LatestSlot:
    """One-frame slot: ``put`` replaces a frame not yet taken (a drop, counted); after
    the end marker, the frame still in the slot is taken, then the end."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._ended = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if item is _END:
                self._ended = True
            else:
                if self._item is not None:
                    self.dropped += 1
                self._item = item
            self._cond.notify()

    def drain(self) -> None:
        pass  # put never waits

    def get(self):
        with self._cond:
            while self._item is None and not self._ended:
                self._cond.wait()
            item, self._item = self._item, None
            return _END if item is None else item


class BoundedQueue:
    """Every frame, in order; ``put`` waits while ``depth`` frames are waiting."""

    dropped = 0

    def __init__(self, depth: int = 8) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)

    def put(self, item) -> None:
        self._queue.put(item)

    def get(self):
        return self._queue.get()

    def drain(self) -> None:
        """Empty the queue so that a waiting ``put`` returns."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class CaptureThread(threading.Thread):
    """Reads ``source`` into ``sink`` (LatestSlot or BoundedQueue) until it ends or
    ``stop`` is set; then puts the end marker. An error is kept in ``error``."""

    def __init__(self, source, sink) -> None:
        super().__init__(name="stmae-capture", daemon=True)
        self.source, self.sink = source, sink
        self.stop = threading.Event()
        self.received = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for index, frame in enumerate(self.source):
                if self.stop.is_set():
                    break
                self.received += 1
                self.sink.put(Captured(index, time.perf_counter(), frame))
        except BaseException as exc:  # noqa: BLE001 - reported by the loop
            self.error = exc
        finally:
            self.sink.put(_END)


@dataclass
class LiveSummary:
    """received: frames read from the source; segmented; dropped (real-time mode);
    latencies: arrival -> label map, seconds; interrupted: ended by Ctrl-C."""

    received: int = 0
    segmented: int = 0
    dropped: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    interrupted: bool = False
    realtime: bool = False

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    def as_dict(self) -> dict:
        return {
            "received": self.received, "segmented": self.segmented, "dropped": self.dropped,
            "seconds": round(self.seconds, 3), "fps": round(self.segmented / self.seconds, 3) if self.seconds else 0.0,
            "latency_p50_ms": round(self.percentile_ms(50), 2), "latency_p99_ms": round(self.percentile_ms(99), 2),
            "interrupted": self.interrupted, "realtime": self.realtime,
        }

    def line(self) -> str:
        fps = self.segmented / self.seconds if self.seconds else 0.0
        return (
            f"{self.segmented} frames segmented of {self.received} received ({self.dropped} dropped), "
            f"{fps:.2f} FPS, latency p50 {self.percentile_ms(50):.1f} ms p99 {self.percentile_ms(99):.1f} ms"
            + (" (stopped by Ctrl-C)" if self.interrupted else "")
        )


def _mask_for(first_mask: np.ndarray, frame: np.ndarray) -> np.ndarray:
    if first_mask.shape != frame.shape[:2]:
        h, w = frame.shape[:2]
        raise InputError(
            f"the mask is {first_mask.shape[1]}x{first_mask.shape[0]} but the stream's frames are {w}x{h}; "
            f"give a mask of the stream's size"
        )
    return first_mask


def segment_live(
    source,
    backend: Backend,
    first_mask: np.ndarray,
    *,
    config: SessionConfig | None = None,
    palette: list[int] | None = None,
    out_dir: str | Path | None = None,
    overlay: str | Path | None = None,
    realtime: bool = True,
    max_frames: int | None = None,
    duration: float | None = None,
    on_frame: Callable[[Captured], None] | None = None,
) -> LiveSummary:
    """Segment ``source`` (an iterable of RGB frames with ``fps`` and ``close()``) from
    ``first_mask`` ((H, W) uint8 label map, applied to the first segmented frame).

    Writes ``out_dir/<index:06d>.png`` and/or the ``overlay`` video. Stops at the end of
    the stream, after ``max_frames`` segmented frames, after ``duration`` seconds, or on
    Ctrl-C (then ``interrupted`` is set and nothing is raised). on_frame(captured) is
    called after each frame is segmented.
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    sink = LatestSlot() if realtime else BoundedQueue()
    capture = CaptureThread(source, sink)
    session = VideoSession(backend, config)
    summary = LiveSummary(realtime=realtime)
    jobs = BackgroundWriter(depth=8)
    writer: OverlayWriter | None = None
    start = time.perf_counter()
    capture.start()
    try:
        while max_frames is None or summary.segmented < max_frames:
            checkpoint()  # a Ctrl-C stops here, between frames (runtime.interrupt)
            if duration is not None and time.perf_counter() - start >= duration:
                break
            item = sink.get()
            if item is _END:
                break
            mask = _mask_for(first_mask, item.frame) if summary.segmented == 0 else None
            if mask is not None and overlay is not None:
                writer = OverlayWriter(overlay, source.fps or 25.0, item.frame.shape[:2], palette)
            labels = session.step(item.frame, mask).labels
            summary.latencies.append(time.perf_counter() - item.time)
            summary.segmented += 1
            jobs.submit(_write_job(out, item, labels, palette, writer))
            if on_frame is not None:
                on_frame(item)
    except KeyboardInterrupt:
        summary.interrupted = True
    except BaseException:
        _stop_capture(capture, sink, source)
        jobs.abort()
        if writer is not None:
            writer.abort()
        raise
    summary.seconds = time.perf_counter() - start
    _stop_capture(capture, sink, source)
    jobs.close()
    if writer is not None:
        writer.close()
    summary.received, summary.dropped = capture.received, sink.dropped
    if capture.error is not None and not summary.segmented:
        raise InputError(f"reading the source failed: {capture.error}".splitlines()[0])
    return summary


def _stop_capture(capture: CaptureThread, sink, source, wait: float = 3.0) -> None:
    """Stop the capture thread; close the source once the thread is out of it (a read
    blocked on the network ends at the source's timeout; the thread is a daemon)."""
    capture.stop.set()
    deadline = time.monotonic() + wait
    while capture.is_alive() and time.monotonic() < deadline:
        sink.drain()
        capture.join(0.05)
    if not capture.is_alive():
        source.close()


def _write_job(out: Path | None, item: Captured, labels: np.ndarray, palette, writer: OverlayWriter | None):
    def job() -> None:
        if out is not None:
            write_mask(out / f"{item.index:06d}.png", labels, palette)
        if writer is not None:
            writer.add(item.frame, labels)

    return job
