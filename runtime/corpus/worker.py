"""One corpus worker: builds its backend once, then segments whole videos into
``<out>/<name>/`` and writes each video's done record after its last mask.

The same :class:`Worker` runs in this process, in a local worker process
(:mod:`runtime.corpus.local_pool`) or in a Ray actor (:mod:`runtime.corpus.ray_runner`);
everything it needs travels in a picklable :class:`WorkerSetup`.
"""

from __future__ import annotations

import socket
import time

from .jobs import VideoJob
from .records import clear_video, utc_now, write_record
from .worker_setup import WorkerSetup, crash_hook, done_record, failure, open_job

class Worker:
    """Holds one backend; :meth:`run` segments one video, :meth:`advance` takes new
    videos and returns the outcomes of the next ones to finish (``setup.streams`` > 1:
    up to that many stepped together by the batched engine,
    :class:`runtime.corpus.batch_worker.StreamBatch`)."""

    def __init__(self, setup: WorkerSetup) -> None:
        import torch

        from ..backends.factory import create_backend

        self.setup = setup
        if setup.threads:
            torch.set_num_threads(setup.threads)
        if setup.backend.device == "cpu":
            torch.set_flush_denormal(True)  # see runtime.cli: denormals slow CPU convolutions
        spec = setup.backend
        self.backend = create_backend(
            spec.name, checkpoint=spec.checkpoint, export_dir=spec.export_dir, device=spec.device,
            precision=spec.precision, options={"tf32": spec.tf32},
        )
        self.host = socket.gethostname()
        self.batch = None
        if setup.streams > 1:
            from .batch_worker import StreamBatch

            self.batch = StreamBatch(self.backend, setup, self.host)

    def advance(self, jobs: list[VideoJob]) -> list[dict]:
        """Take ``jobs`` (as many as the worker has free lanes: ``setup.streams`` minus
        the videos it holds) and work until at least one held video has its outcome;
        returns those outcomes (``worker_seconds`` added), [] if it holds no video."""
        if self.batch is not None:
            return self.batch.advance(jobs)
        return [timed_run(self, job) for job in jobs]

    def run(self, job: VideoJob) -> dict:
        """Segment ``job`` into ``out/<name>/``; returns ``{"name", "status": "done" |
        "failed", "error", "retriable", "record"}``. Partial output of a failed video is
        cleared; a done video has its record written after its last mask."""
        from ..io.pipeline import PipelineOptions
        from ..segment_video import segment_video

        out = self.setup.out
        clear_video(out, job.name)
        started = utc_now()
        try:
            frames, annotations = open_job(job, self.setup.max_frames)
            summary = segment_video(
                self.backend, job.source, out / job.name, config=self.setup.config, overwrite=True, record=False,
                frames=frames, annotations=annotations, on_frame=crash_hook(self.setup.crash_at, job.name),
                pipeline=PipelineOptions(png_level=self.setup.png_level),
            )  # returns once the masks are synced: the record below follows them
        except Exception as exc:  # the video fails; the worker goes on with the next one
            clear_video(out, job.name)
            return failure(job.name, exc)
        record = done_record(self.setup, job, summary.frames, summary.objects, summary.seconds, started, self.host,
                             summary.missing_frames)
        write_record(out, job.name, record)
        return {"name": job.name, "status": "done", "error": None, "retriable": False, "record": record}


def timed_run(worker: Worker, job: VideoJob) -> dict:
    """:meth:`Worker.run` with the worker-side wall time added (``worker_seconds``)."""
    start = time.perf_counter()
    result = worker.run(job)
    result["worker_seconds"] = time.perf_counter() - start
    return result
