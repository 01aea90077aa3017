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
drops) and the overlay video are written behind the network's work. Whatever ends the
run (the source ending, stalling past its timeout, breaking mid-frame, a frame of another
size, ``max_frames``, ``duration`` or Ctrl-C) ends the loop cleanly: written masks are
whole, the overlay is finished and moved into place, and the statistics are returned with
the reason (:class:`LiveSummary`). A frame of another size than the first is never
segmented (the capture stops there). Every frame taken from the source is accounted for:
received = segmented + dropped + queued (still waiting when the run stopped).
"""

from __future__ import annotations

import threading
import time
from collections import deque
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
from .source import BROKE_MID_FRAME, READ_ERROR, SOURCE_ENDED, STALLED

_END = object()


@dataclass(frozen=True)
class Captured:
    """A frame from the source: index in the stream, arrival time (perf_counter, s), RGB
    (H, W, 3) uint8."""

    index: int
    time: float
    frame: np.ndarray


class _Sink:
    """Frames between the capture thread and the segmenter, counted: ``received`` (taken
    in), ``dropped`` (replaced before the segmenter took them, real-time mode), ``queued``
    (still waiting when :meth:`close` stopped the run). Every received frame ends
    segmented (taken by :meth:`get`), dropped or queued."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: deque = deque()
        self._ended = self._closed = False
        self.received = self.dropped = self.queued = 0

    def _accept(self, item) -> bool:
        """Under the lock: True if ``item`` is a frame to store (counted as received)."""
        if item is _END:
            self._ended = True
            self._cond.notify_all()
            return False
        if self._closed:
            return False  # the run has stopped: not received
        self.received += 1
        return True

    def get(self, timeout: float | None = None):
        """The next frame, ``_END`` once the source ended and nothing waits, or None if
        nothing came within ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._ended, timeout)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return _END if self._ended else None

    def close(self) -> None:
        """Stop taking frames: those waiting are counted as ``queued``; a ``put`` waiting
        for room returns without storing its frame."""
        with self._cond:
            self._closed = True
            self.queued += len(self._items)
            self._items.clear()
            self._cond.notify_all()

    def drain(self) -> None:
        self.close()


class LatestSlot(_Sink):
    """One-frame slot: ``put`` replaces a frame not yet taken (a drop, counted); after
    the end marker, the frame still in the slot is taken, then the end."""

    def put(self, item) -> None:
        with self._cond:
            if self._accept(item):
                if self._items:
                    self.dropped += 1
                    self._items.clear()
                self._items.append(item)
                self._cond.notify_all()


class BoundedQueue(_Sink):
    """Every frame, in order; ``put`` waits while ``depth`` frames are waiting."""

    def __init__(self, depth: int = 8) -> None:
        super().__init__()
        self.depth = depth

    def put(self, item) -> None:
        with self._cond:
            while item is not _END and len(self._items) >= self.depth and not self._closed:
                self._cond.wait()
            if self._accept(item):
                self._items.append(item)
                self._cond.notify_all()


class CaptureThread(threading.Thread):
    """Reads ``source`` into ``sink`` (LatestSlot or BoundedQueue) until it ends, ``stop``
    is set, or a frame's size differs from the first frame's (that frame and the rest are
    not taken: ``end`` is then :data:`SIZE_CHANGED`); then puts the end marker. An
    unexpected error is kept in ``error``."""

    def __init__(self, source, sink) -> None:
        super().__init__(name="stmae-capture", daemon=True)
        self.source, self.sink = source, sink
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.end: str | None = None
        self.end_detail = ""

    def run(self) -> None:
        shape = None
        try:
            for index, frame in enumerate(self.source):
                if self.stop.is_set():
                    break
                shape = shape or frame.shape
                if frame.shape != shape:
                    self.end = SIZE_CHANGED
                    self.end_detail = (f"the frame size changed from {shape[1]}x{shape[0]} to {frame.shape[1]}x"
                                       f"{frame.shape[0]} at frame {index} (that frame and the rest were not segmented)")
                    break
                self.sink.put(Captured(index, time.perf_counter(), frame))
                if self.stop.is_set():  # stopped while this frame waited for room
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by the loop
            self.error = exc
        finally:
            self.sink.put(_END)


# Why a run ended besides the source's own reasons (runtime.live.source): the loop's.
SIZE_CHANGED = "size changed"
CTRL_C = "Ctrl-C"
DURATION = "duration"
MAX_FRAMES = "max frames"
# Ends that cut the run short (partial results: the command exits 1 with a warning).
FAILED_ENDS = (STALLED, BROKE_MID_FRAME, SIZE_CHANGED, READ_ERROR)


@dataclass
class LiveSummary:
    """received: frames taken from the source; segmented; dropped (real-time mode);
    queued: received but still waiting when the run stopped (received = segmented +
    dropped + queued, always); latencies: arrival -> label map, seconds; end: why the run
    ended (:data:`runtime.live.source.SOURCE_ENDED`, ``STALLED``, ``BROKE_MID_FRAME``,
    ``READ_ERROR``, or :data:`SIZE_CHANGED`, :data:`CTRL_C`, :data:`DURATION`,
    :data:`MAX_FRAMES`), end_detail: the same in words; interrupted: ended by Ctrl-C;
    damaged: packets the source skipped (cut short or undecodable)."""

    received: int = 0
    segmented: int = 0
    dropped: int = 0
    queued: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    interrupted: bool = False
    realtime: bool = False
    end: str = SOURCE_ENDED
    end_detail: str = "the source ended"
    damaged: int = 0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    @property
    def failed(self) -> bool:
        """The source failed mid-run (stalled, broke, changed size, read error)."""
        return self.end in FAILED_ENDS

    def warning(self) -> str | None:
        """One line when the source failed mid-run, else None."""
        if not self.failed:
            return None
        return (f"the live run ended early: {self.end_detail}; the masks, overlay and statistics of the "
                f"{self.segmented} frames segmented before were kept")

    def as_dict(self) -> dict:
        return {
            "received": self.received, "segmented": self.segmented, "dropped": self.dropped, "queued": self.queued,
            "seconds": round(self.seconds, 3), "fps": round(self.segmented / self.seconds, 3) if self.seconds else 0.0,
            "latency_p50_ms": round(self.percentile_ms(50), 2), "latency_p99_ms": round(self.percentile_ms(99), 2),
            "interrupted": self.interrupted, "realtime": self.realtime, "end_reason": self.end,
            "end_detail": self.end_detail, "damaged_packets": self.damaged,
        }

    def line(self) -> str:
        fps = self.segmented / self.seconds if self.seconds else 0.0
        return (
            f"{self.segmented} frames segmented of {self.received} received ({self.dropped} dropped, {self.queued} "
            f"still queued at the end), {fps:.2f} FPS, latency p50 {self.percentile_ms(50):.1f} ms p99 "
            f"{self.percentile_ms(99):.1f} ms; end: {self.end_detail}"
        )


def mask_for_frame(first_mask: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """``first_mask`` ((H, W) uint8) if it has the size of ``frame`` ((H, W, 3) uint8);
    InputError otherwise."""
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
    """Segment ``source`` (an iterable of RGB frames with ``fps`` and ``close()``; a
    :class:`runtime.live.source.LiveSource` also says why it ended) from ``first_mask``
    ((H, W) uint8 label map, applied to the first segmented frame).

    Writes ``out_dir/<index:06d>.png`` and/or the ``overlay`` video. Stops at the end of
    the stream, when it stalls, breaks or changes frame size, after ``max_frames``
    segmented frames, after ``duration`` seconds, or on Ctrl-C (then ``interrupted`` is
    set and nothing is raised); in every case the masks, overlay and statistics of the
    frames segmented before are kept, and ``end`` says why. on_frame(captured) is called
    after each frame is segmented. InputError if the source failed before any frame was
    segmented.
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
    end: tuple[str, str] | None = None
    start = time.perf_counter()
    capture.start()
    try:
        while True:
            checkpoint()  # a Ctrl-C stops here, between frames (runtime.interrupt)
            if max_frames is not None and summary.segmented >= max_frames:
                end = (MAX_FRAMES, f"--max-frames {max_frames} reached")
                break
            if duration is not None and time.perf_counter() - start >= duration:
                end = (DURATION, f"--duration {duration:g} s reached")
                break
            item = sink.get(_POLL_S)  # bounded: Ctrl-C and --duration are seen while the source is quiet
            if item is None:
                continue
            if item is _END:
                break
            try:
                mask = mask_for_frame(first_mask, item.frame) if summary.segmented == 0 else None
                if mask is not None and overlay is not None:
                    writer = OverlayWriter(overlay, source.fps or 25.0, item.frame.shape[:2], palette)
                labels = session.step(item.frame, mask).labels
            except BaseException:
                sink.queued += 1  # taken, not segmented: still counted
                raise
            summary.latencies.append(time.perf_counter() - item.time)
            summary.segmented += 1
            jobs.submit(_write_job(out, item, labels, palette, writer))
            if on_frame is not None:
                on_frame(item)
    except KeyboardInterrupt:
        summary.interrupted = True
        end = (CTRL_C, "stopped by Ctrl-C")
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
    summary.received, summary.dropped, summary.queued = sink.received, sink.dropped, sink.queued
    summary.damaged = getattr(source, "damaged", 0)
    summary.end, summary.end_detail = end or _source_end(capture, source)
    if summary.failed and not summary.segmented:
        raise InputError(f"{summary.end_detail}; no frame was segmented")
    return summary


_POLL_S = 0.1


def _source_end(capture: CaptureThread, source) -> tuple[str, str]:
    """Why the frames stopped: a size change, an unexpected error, or the source's reason."""
    if capture.end is not None:
        return capture.end, capture.end_detail
    if capture.error is not None:
        return READ_ERROR, f"reading the source failed: {capture.error}".splitlines()[0]
    if getattr(source, "end", None):
        return source.end, source.end_detail
    return SOURCE_ENDED, "the source ended"


def _stop_capture(capture: CaptureThread, sink, source, wait: float = 3.0) -> None:
    """Stop the capture thread and close the sink (a put waiting for room returns; the
    frames still waiting are counted as queued); close the source once the thread is out
    of it (a read blocked on the network ends at the source's timeout; the thread is a
    daemon)."""
    capture.stop.set()
    sink.close()
    capture.join(wait)
    if not capture.is_alive():
        source.close()


def _write_job(out: Path | None, item: Captured, labels: np.ndarray, palette, writer: OverlayWriter | None):
    def job() -> None:
        if out is not None:
            write_mask(out / f"{item.index:06d}.png", labels, palette)
        if writer is not None:
            writer.add(item.frame, labels)

    return job
