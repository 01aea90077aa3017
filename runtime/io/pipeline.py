"""The pipelined frame loop: the one loop of ``stmae-segment`` (a video, and each video of a
corpus run), ``stmae-eval`` (a sequence at a time, or ``--streams``) and the batched corpus
worker. It keeps host work (decoding, PNG writing, fsync) off the device step's path.

Each video the loop holds is a stream of one :class:`runtime.engine.stream_engine.StreamEngine`;
every step advances all of them by a frame:

- **decode ahead**: a frame folder's files are decoded ``decode_ahead`` frames in front of
  the step on a thread pool shared by all videos (``decoders`` threads); any other source
  (a video file, frames decoded on the GPU) in a thread of its own
  (:class:`runtime.io.overlap.Prefetcher`), as far ahead;
- **submit before wait**: step t+1 is submitted (:meth:`StreamEngine.submit`) before the
  results of step t are waited for, so under CUDA graphs the device runs step t while the
  host prepares step t+1 (at most two steps in flight); an eager engine has its results at
  submit, and they are handled at once;
- **writer pool**: masks are PNG-encoded (zlib level ``png_level``) and written by
  ``writers`` threads, in any order, at most ``write_depth`` waiting (the step blocks on a
  full queue: memory stays flat). A write error is raised in the caller (it fails that
  video);
- **group commit**: no fsync per mask. Masks are synced, renamed into place and their
  folder fsync'ed every ``sync_every`` masks and at the end of each video
  (:class:`stmae.atomic.GroupCommit`); a video's outcome is returned only after that, so a
  record written by the caller always follows masks that are on disk.

A video that fails (a bad frame or mask, a failed write) leaves alone: its outcome carries
the error and its masks not yet in place are removed; the other videos go on. An error of
the step itself (e.g. out of memory) fails every video not finished, and the engine is
built afresh. The masks are those of stepping the engine one frame at a time
(``tests/runtime/io/test_pipeline.py``).
"""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping

import numpy as np

from stmae.atomic import GroupCommit

from ..engine.session import check_step_input
from ..engine.stream_engine import StreamEngine, StreamInput, StreamResult
from ..interrupt import checkpoint
from .frames import FrameFolder, natural_key
from .mask_io import DEFAULT_PNG_LEVEL, check_png_level, labels_present, write_mask
from .overlap import Ahead, Prefetcher, WriterPool


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class PipelineOptions:
    """How the loop overlaps host work with the step.

    png_level: zlib level of the mask PNGs, 0 (none) .. 9 (smallest); 1 (fast) by default.
        Every level gives the same labels. decode_ahead: frames decoded in front of the
    step, per video; decoders: decode threads shared by the videos of frame folders
    (default: the usable cores, at most 8); writers: PNG writer threads (the cores, at
    most 4); write_depth: masks waiting to be written, at most; sync_every: masks made
    durable together (besides each video's end).
    """

    png_level: int = DEFAULT_PNG_LEVEL
    decode_ahead: int = 4
    decoders: int = field(default_factory=lambda: min(8, _cores()))
    writers: int = field(default_factory=lambda: min(4, _cores()))
    write_depth: int = 16
    sync_every: int = 64

    def __post_init__(self) -> None:
        check_png_level(self.png_level)
        for name in ("decode_ahead", "decoders", "writers", "write_depth", "sync_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class LoopVideo:
    """One video for :class:`FrameLoop`.

    key: its stream id, unique among the loop's videos. frames: (name, frame) pairs, frame
    (H, W, 3) uint8 RGB (numpy, or a uint8 tensor on the engine's device): a
    :class:`FrameFolder` (decoded on the shared pool) or any iterable. masks: given label
    maps (H, W) uint8 by frame name; at a frame with a mask, the labels not known yet are
    taken (all of them at the first). out: folder that gets ``<frame name>.png`` (None: no
    masks written); palette: their palette. limit: at most this many frames.
    on_frame(name, frame, result): called in the loop's thread, in frame order, once the
    frame's mask is queued for writing.
    """

    key: Hashable
    frames: Iterable
    masks: Mapping[str, np.ndarray] = field(default_factory=dict)
    out: Path | None = None
    palette: list[int] | None = None
    limit: int | None = None
    on_frame: Callable[[str, Any, StreamResult], None] | None = None


@dataclass(frozen=True)
class VideoOutcome:
    """What became of a video: frames stepped (and written); objects: the labels known at
    its end; unused: given masks of frames it did not reach (natural order); error: why it
    failed (None: its masks are all on disk, synced); seconds: from :meth:`FrameLoop.add`."""

    key: Hashable
    frames: int
    objects: tuple[int, ...]
    unused: tuple[str, ...]
    error: BaseException | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


class _Held:
    def __init__(self, video: LoopVideo, feed) -> None:
        self.video, self.feed = video, feed
        self.submitted = self.count = 0
        self.used: set[str] = set()
        self.objects: tuple[int, ...] = ()
        self.ended = False
        self.error: BaseException | None = None
        self.t0 = time.perf_counter()

    @property
    def settled(self) -> bool:
        """Its frames are over and every submitted one was handled."""
        return self.ended and self.count == self.submitted


class FrameLoop:
    """Steps the videos it holds (:meth:`add`) through the engine ``make_engine()`` gives.

    :meth:`advance` steps until at least one video has its outcome and returns those;
    :meth:`run` takes one video to its outcome. Use as a context manager: a clean exit
    waits for every write (:meth:`close`), an exception drops what is not written yet and
    removes its temp files (:meth:`abort`).
    """

    def __init__(self, make_engine: Callable[[], StreamEngine], options: PipelineOptions | None = None) -> None:
        self.options = options or PipelineOptions()
        self._make_engine = make_engine
        self.engine = make_engine()
        self._held: dict[Hashable, _Held] = {}
        self._pending: tuple[Any, dict] | None = None  # (PendingStep, {key: (name, frame)})
        self._decode: ThreadPoolExecutor | None = None
        self._writers: WriterPool | None = None
        self.group: GroupCommit | None = None

    # ---- videos -------------------------------------------------------------------------
    def add(self, video: LoopVideo) -> None:
        """Hold ``video``: its decoding starts now, its frames go into the next steps."""
        if video.key in self._held:
            raise ValueError(f"video {video.key!r} is already in the loop")
        if video.out is not None and self._writers is None:
            self._writers = WriterPool(self.options.writers, self.options.write_depth)
            self.group = GroupCommit(self.options.sync_every)
        feed = self._feed(video.frames, video.limit)
        self.engine.add_stream(video.key)
        self._held[video.key] = _Held(video, feed)

    def _feed(self, frames: Iterable, limit: int | None):
        ahead = self.options.decode_ahead
        if isinstance(frames, FrameFolder):
            if self._decode is None:
                self._decode = ThreadPoolExecutor(self.options.decoders, thread_name_prefix="stmae-decode")
            count = len(frames) if limit is None else min(len(frames), limit)
            return Ahead(range(count), lambda i: (frames.names[i], frames.read(i)), self._decode, ahead)
        return Prefetcher(frames if limit is None else itertools.islice(frames, limit), depth=ahead)

    @property
    def held(self) -> tuple[Hashable, ...]:
        return tuple(self._held)

    def run(self, video: LoopVideo) -> VideoOutcome:
        """Add ``video`` and step until its outcome (the only video held)."""
        self.add(video)
        while video.key in self._held:
            for outcome in self.advance():
                if outcome.key == video.key:
                    return outcome
        raise RuntimeError(f"video {video.key!r} left the loop without an outcome")

    def advance(self) -> list[VideoOutcome]:
        """Step every held video until at least one has its outcome; [] if none is held."""
        outcomes: list[VideoOutcome] = []
        while not outcomes and self._held:
            outcomes = self._tick()
        return outcomes

    # ---- one step -----------------------------------------------------------------------
    def _tick(self) -> list[VideoOutcome]:
        checkpoint()  # a Ctrl-C stops here, between steps (runtime.interrupt)
        inputs: dict[Hashable, StreamInput] = {}
        frames: dict[Hashable, tuple[str, Any]] = {}
        for key, held in self._held.items():
            if held.ended or held.error is not None:
                continue
            try:
                item = next(held.feed, None)
                if item is None:
                    held.ended = True
                    continue
                inputs[key] = self._input(held, *item)
                frames[key] = item
                held.submitted += 1
            except Exception as exc:  # this video's frame or mask: it leaves alone
                held.error = exc
        step = None
        if inputs:
            try:
                step = (self.engine.submit(inputs), frames)  # step t+1 queued ...
            except Exception as exc:
                self._engine_failed(exc)
                return self._outcomes()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if not self._handle(pending):  # ... before waiting for step t
                return self._outcomes()
        if step is not None:
            if step[0].done:
                self._handle(step)
            else:
                self._pending = step
        return self._outcomes()

    def _input(self, held: _Held, name: str, frame) -> StreamInput:
        schedule = self.engine.schedule(held.video.key)
        mask = held.video.masks.get(name)
        objects = None
        if mask is not None:
            held.used.add(name)
            known = schedule.registry.labels
            if len(known):
                objects = [label for label in labels_present(mask) if label not in known]
                if not objects:
                    mask, objects = None, None
        return check_step_input(schedule, frame, mask, objects)

    def _handle(self, step) -> bool:
        """Wait for a submitted step and hand its masks to the writers; False if the step
        itself failed (every unfinished video then fails)."""
        pending, frames = step
        try:
            results = pending.wait()
        except Exception as exc:
            self._engine_failed(exc)
            return False
        level, group = self.options.png_level, self.group
        for key, result in results.items():
            held = self._held[key]
            held.count += 1
            held.objects = result.object_labels
            if held.error is not None:
                continue
            name, frame = frames[key]
            video = held.video
            try:
                if video.out is not None:
                    self._writers.submit(key, partial(write_mask, video.out / f"{name}.png", result.labels,
                                                      video.palette, level, group))
                if video.on_frame is not None:
                    video.on_frame(name, frame, result)
            except Exception as exc:  # a failed write of this video, or its callback
                held.error = exc
        return True

    def _engine_failed(self, exc: BaseException) -> None:
        self._pending = None
        for held in self._held.values():
            if held.error is None and not held.settled:
                held.error = exc
        self.engine = self._make_engine()  # the failed engine's state is not trusted

    # ---- outcomes -----------------------------------------------------------------------
    def _outcomes(self) -> list[VideoOutcome]:
        in_flight = self._pending[1] if self._pending is not None else {}
        outcomes = []
        for key, held in list(self._held.items()):
            if key in in_flight:
                continue
            if held.error is not None:
                outcomes.append(self._fail(held, held.error))
            elif held.settled:
                outcomes.append(self._finish(held))
        return outcomes

    def _finish(self, held: _Held) -> VideoOutcome:
        out = held.video.out
        if out is not None:
            try:
                self._writers.wait(held.video.key)
                self.group.commit(out)  # synced and in place before the outcome (and its record)
            except Exception as exc:
                return self._fail(held, exc)
        self._leave(held)
        return self._outcome(held, None)

    def _fail(self, held: _Held, error: BaseException) -> VideoOutcome:
        if held.video.out is not None:
            self._writers.drop(held.video.key)
            self.group.discard(held.video.out)
        self._leave(held)
        return self._outcome(held, error)

    def _leave(self, held: _Held) -> None:
        key = held.video.key
        del self._held[key]
        held.feed.close()
        if key in self.engine.streams:
            self.engine.remove_stream(key)

    @staticmethod
    def _outcome(held: _Held, error: BaseException | None) -> VideoOutcome:
        unused = tuple(sorted(set(held.video.masks) - held.used, key=natural_key))
        return VideoOutcome(held.video.key, held.count, held.objects, unused, error,
                            time.perf_counter() - held.t0)

    # ---- end ----------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for every write and put every mask in place; raise the first write error."""
        try:
            if self._writers is not None:
                self._writers.close()
                self.group.commit()
        finally:
            self._shutdown()

    def abort(self) -> None:
        """Stop: drop the writes not started, remove the temp files of masks not in place."""
        try:
            if self._writers is not None:
                self._writers.abort()
                self.group.discard()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for held in self._held.values():
            held.feed.close()
        self._held.clear()
        self._pending = None
        if self._decode is not None:
            self._decode.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "FrameLoop":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
