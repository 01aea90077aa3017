"""One corpus worker's videos stepped together: up to ``setup.streams`` videos hold the
lanes of one :class:`runtime.engine.stream_engine.StreamEngine`; each frame step advances all of them
by one frame (one batched device step per frame size). A video that ends leaves (its
record written after its last mask) and its lane is reused by the next video the runner
hands in. Each video gets exactly the masks it gets alone (the engine's equivalence).

Each video's frames are decoded ahead in a background thread (:class:`runtime.io.overlap.
Prefetcher`), and the masks of a step are PNG-encoded in parallel threads; the step's
writes are waited for, so a video's record always follows its last mask on disk.

The runner drives it through :meth:`StreamBatch.advance`: hand in new videos, get back the
outcomes of the next ones to finish. A video that fails (corrupt frame, bad mask) leaves
alone, its partial output cleared; the others go on. An error of the batched step itself
(e.g. out of memory) fails every video in the step, and the engine starts afresh.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..engine.stream_engine import EngineOptions, StreamEngine
from ..io.mask_io import write_mask
from ..interrupt import checkpoint
from ..io.overlap import Prefetcher
from ..segment_video import Annotations, labels_present
from ..engine.session import check_step_input
from ..errors import InputError
from .jobs import VideoJob
from .records import clear_video, utc_now, write_record
from .worker_setup import WorkerSetup, crash_hook, done_record, failure, open_job


@dataclass
class _Video:
    """One video in a lane: its frames (the next one peeked), masks, output folder."""

    job: VideoJob
    frames: Prefetcher
    annotations: Annotations
    folder: Path
    started: str
    t0: float
    on_frame: Callable[[int], None] | None
    peek: tuple | None = None
    count: int = 0
    used: set = field(default_factory=set)


class StreamBatch:
    """Up to ``setup.streams`` videos of one worker, stepped together on ``backend``."""

    def __init__(self, backend, setup: WorkerSetup, host: str) -> None:
        self.backend, self.setup, self.host = backend, setup, host
        # As segment_video: on CUDA the step is captured in a CUDA graph per bucket shape.
        self.options = replace(EngineOptions.fastest(backend.device, compile=False), keep_prob=False)
        self.engine = StreamEngine(backend, setup.config, self.options)
        self.videos: dict[str, _Video] = {}
        self.writers = ThreadPoolExecutor(max_workers=min(setup.streams, 8), thread_name_prefix="stmae-png")

    def advance(self, jobs: list[VideoJob]) -> list[dict]:
        """Open ``jobs`` into free lanes, then step every held video frame by frame until
        at least one has its outcome; returns the outcomes (``worker_seconds`` added),
        [] if no video is held."""
        if len(self.videos) + len(jobs) > self.setup.streams:
            raise ValueError(f"{len(jobs)} new video(s) do not fit: {len(self.videos)} of "
                             f"{self.setup.streams} lanes are held")
        received, results = time.perf_counter(), []
        for job in jobs:
            results.extend(self._open(job, received))
        while self.videos and not results:
            checkpoint()  # a Ctrl-C stops here, between steps (runtime.interrupt)
            results = self._step()
        return results

    # ---- one video --------------------------------------------------------------------
    def _open(self, job: VideoJob, t0: float) -> list[dict]:
        """Open ``job`` into a lane (``t0``: when the worker got it; its seconds count from there)."""
        out = self.setup.out
        clear_video(out, job.name)
        started = utc_now()
        try:
            frames, annotations = open_job(job, self.setup.max_frames)
            folder = out / job.name
            folder.mkdir(parents=True, exist_ok=True)
            video = _Video(job, Prefetcher(frames, depth=2), annotations, folder, started, t0,
                           crash_hook(self.setup.crash_at, job.name))
        except Exception as exc:
            clear_video(out, job.name)
            return [self._timed(failure(job.name, exc), t0)]
        try:
            video.peek = next(video.frames, None)
        except Exception as exc:
            video.frames.close()
            clear_video(out, job.name)
            return [self._timed(failure(job.name, exc), t0)]
        self.videos[job.name] = video
        self.engine.add_stream(job.name)
        return [self._finish(job.name)] if video.peek is None else []

    def _input(self, name: str):
        """The engine input of the video's peeked frame (as segment_video gives it)."""
        video = self.videos[name]
        frame_name, frame = video.peek
        schedule = self.engine.schedule(name)
        mask = video.annotations.masks.get(frame_name)
        objects = None
        if mask is not None:
            video.used.add(frame_name)
            known = schedule.registry.labels
            if len(known):
                objects = [label for label in labels_present(mask) if label not in known]
                if not objects:
                    mask, objects = None, None
        return check_step_input(schedule, frame, mask, objects)

    def _write(self, name: str, labels):
        """Start writing the video's mask of the frame just stepped (a future)."""
        video = self.videos[name]
        return self.writers.submit(write_mask, video.folder / f"{video.peek[0]}.png", labels,
                                   video.annotations.palette)

    def _after(self, name: str, written) -> dict | None:
        """The video's mask of the frame just stepped is written (``written``: its
        future); peek its next frame. The outcome if the video ended."""
        video = self.videos[name]
        written.result()
        video.count += 1
        if video.on_frame is not None:
            video.on_frame(video.count)
        video.peek = next(video.frames, None)
        return self._finish(name) if video.peek is None else None

    def _finish(self, name: str) -> dict:
        """The video's last mask is written: check every mask was used, write its record."""
        video = self.videos[name]
        unused = sorted(set(video.annotations.masks) - video.used)
        if unused:
            return self._fail(name, InputError(
                f"masks for frames {', '.join(unused[:5])} were not used: the input has no such frame "
                f"({video.count} frames were segmented)"))
        objects = self.engine.schedule(name).registry.labels
        record = done_record(self.setup, video.job, video.count, objects, time.perf_counter() - video.t0,
                             video.started, self.host)
        try:
            write_record(self.setup.out, name, record)
        except Exception as exc:  # e.g. the disk is full: the video is not done
            return self._fail(name, exc)
        self._leave(name)
        return self._timed({"name": name, "status": "done", "error": None, "retriable": False, "record": record},
                           video.t0)

    def _fail(self, name: str, exc: BaseException) -> dict:
        video = self.videos[name]
        self._leave(name)
        clear_video(self.setup.out, name)
        return self._timed(failure(name, exc), video.t0)

    def _leave(self, name: str) -> None:
        self.videos.pop(name).frames.close()
        if name in self.engine.streams:
            self.engine.remove_stream(name)

    @staticmethod
    def _timed(result: dict, t0: float) -> dict:
        result["worker_seconds"] = time.perf_counter() - t0
        return result

    # ---- one frame of every held video ------------------------------------------------
    def _step(self) -> list[dict]:
        results, inputs = [], {}
        for name in list(self.videos):
            try:
                inputs[name] = self._input(name)
            except Exception as exc:  # this video's frame or mask is bad: it leaves alone
                results.append(self._fail(name, exc))
        if not inputs:
            return results
        try:
            stepped = self.engine.step(inputs)
        except Exception as exc:  # the batched step itself: every video in it fails
            for name in inputs:
                results.append(self._fail(name, exc))
            self.engine = StreamEngine(self.backend, self.setup.config, self.options)
            return results
        writes = {name: self._write(name, result.labels) for name, result in stepped.items()}
        for name, written in writes.items():
            try:
                outcome = self._after(name, written)
            except Exception as exc:  # decoding its next frame, or writing its mask
                outcome = self._fail(name, exc)
            if outcome is not None:
                results.append(outcome)
        return results
