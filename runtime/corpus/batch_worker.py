"""One corpus worker's videos stepped together: up to ``setup.streams`` videos hold the
lanes of one :class:`runtime.engine.stream_engine.StreamEngine`, through the pipelined loop
(:class:`runtime.io.pipeline.FrameLoop`): each step advances all of them by one frame (one
batched device step per frame size), frames decoded ahead, masks written by a writer pool
and synced as a group commit. A video that ends leaves (its record written after its
masks are synced) and its lane is reused by the next video the runner hands in. Each
video gets exactly the masks it gets alone (the engine's equivalence).

The runner drives it through :meth:`StreamBatch.advance`: hand in new videos, get back the
outcomes of the next ones to finish. A video that fails (corrupt frame, bad mask, failed
write) leaves alone, its partial output cleared; the others go on. An error of the batched
step itself (e.g. out of memory) fails every video in the step, and the engine starts afresh.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

from ..engine.stream_engine import EngineOptions, StreamEngine
from ..io.frames import missing_frames
from ..io.pipeline import FrameLoop, LoopVideo, PipelineOptions, VideoOutcome
from ..segment_video import unused_masks_error
from .jobs import VideoJob
from .records import clear_video, utc_now, write_record
from .worker_setup import WorkerSetup, crash_hook, done_record, failure, open_job


def _counted(hook):
    """``hook(frames done)`` as a loop's on_frame callback (None if no hook)."""
    if hook is None:
        return None
    count = itertools.count(1)
    return lambda name, frame, result: hook(next(count))


class StreamBatch:
    """Up to ``setup.streams`` videos of one worker, stepped together on ``backend``."""

    def __init__(self, backend, setup: WorkerSetup, host: str) -> None:
        self.backend, self.setup, self.host = backend, setup, host
        # As segment_video: on CUDA the step is captured in a CUDA graph per bucket shape.
        self.options = replace(EngineOptions.fastest(backend.device, compile=False), keep_prob=False)
        self.loop = FrameLoop(lambda: StreamEngine(backend, setup.config, self.options),
                              PipelineOptions(png_level=setup.png_level))
        self.videos: dict[str, tuple] = {}  # name -> (job, started, t0, frames)

    @property
    def engine(self) -> StreamEngine:
        return self.loop.engine

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
            results = [self._result(outcome) for outcome in self.loop.advance()]
        return results

    def _open(self, job: VideoJob, t0: float) -> list[dict]:
        """Open ``job`` into a lane (``t0``: when the worker got it; its seconds count from there)."""
        out = self.setup.out
        clear_video(out, job.name)
        started = utc_now()
        try:
            frames, annotations = open_job(job, self.setup.max_frames)
            folder = out / job.name
            folder.mkdir(parents=True, exist_ok=True)
        except Exception as exc:
            clear_video(out, job.name)
            return [self._timed(failure(job.name, exc), t0)]
        self.videos[job.name] = (job, started, t0, frames)
        self.loop.add(LoopVideo(job.name, frames, annotations.masks, folder, annotations.palette,
                                on_frame=_counted(crash_hook(self.setup.crash_at, job.name))))
        return []

    def _result(self, outcome: VideoOutcome) -> dict:
        """The runner's result of a video the loop is done with: its record is written
        (after its masks, which the loop synced), or its partial output cleared."""
        name = outcome.key
        job, started, t0, frames = self.videos.pop(name)
        error = outcome.error
        if error is None and outcome.unused:
            error = unused_masks_error(outcome.unused, outcome.frames)
        if error is None:
            record = done_record(self.setup, job, outcome.frames, outcome.objects, time.perf_counter() - t0,
                                 started, self.host, missing_frames(frames, outcome.frames))
            try:
                write_record(self.setup.out, name, record)
            except Exception as exc:  # e.g. the disk is full: the video is not done
                error = exc
            else:
                return self._timed({"name": name, "status": "done", "error": None, "retriable": False,
                                    "record": record}, t0)
        clear_video(self.setup.out, name)
        return self._timed(failure(name, error), t0)

    @staticmethod
    def _timed(result: dict, t0: float) -> dict:
        result["worker_seconds"] = time.perf_counter() - t0
        return result
