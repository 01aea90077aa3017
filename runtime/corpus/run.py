"""Run a corpus: plan (skip finished videos, clear unfinished ones), dispatch to a runner,
and summarise (``OUT/run_summary.json`` plus one line).

Runners: ``workers=0`` segments the videos one after the other in this process;
``workers=N`` uses N local worker processes; ``ray=ADDRESS`` uses Ray actors. Whatever the
runner, ``--out`` goes through the output gate (:func:`check_corpus_output`) before any
worker starts, and is locked (:func:`runtime.corpus.records.locked`) while the run writes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

from ..cpus import usable_cpus
from ..errors import InputError, output_refusals_as_input_errors
from . import records
from .dispatch import WorkList
from .jobs import VideoJob
from .worker import Worker
from .worker_setup import CRASH_ENV, WorkerSetup, truncated_entry


@dataclass
class CorpusSummary:
    """Outcome of a run: ``done`` (this run), ``skipped`` (done before), ``retried``
    (names -> attempts), ``failed`` (name -> error), ``truncated`` (name -> entry of a done
    or skipped video that ended before the frames its container announces, see
    :func:`runtime.corpus.worker_setup.truncated_entry`; the run is then not ok). seconds: wall time of the dispatch;
    startup_seconds: until the first worker had its backend (Ray: including ray.init);
    worker_seconds: summed time inside workers' video loops; dispatch_seconds: summed
    (hand-out to result) - (worker time): what the runner adds per video."""

    out: Path
    runner: str
    total: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    retried: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    truncated: dict[str, dict] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0
    worker_seconds: float = 0.0
    dispatch_seconds: float = 0.0
    startup_seconds: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.truncated and not self.interrupted

    def as_dict(self) -> dict:
        return {
            "out": str(self.out), "runner": self.runner, "videos": self.total,
            "done": self.done, "skipped": self.skipped, "retried": self.retried,
            "failed": [{"name": n, "error": e} for n, e in self.failed.items()],
            "truncated": list(self.truncated.values()),
            "frames": self.frames, "seconds": round(self.seconds, 3),
            "worker_seconds": round(self.worker_seconds, 3), "startup_seconds": round(self.startup_seconds, 3),
            "dispatch_seconds": round(self.dispatch_seconds, 4),
            "started_at": self.started_at, "finished_at": self.finished_at, "interrupted": self.interrupted,
        }

    def line(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.total} videos: {len(self.done)} done, {len(self.skipped)} skipped (done before), "
            f"{len(self.retried)} retried, {len(self.failed)} failed"
            f"{f', {len(self.truncated)} truncated' if self.truncated else ''}; {self.frames} frames in "
            f"{self.seconds:.1f} s ({fps:.2f} FPS) on {self.runner} -> {self.out}"
        )
        if self.interrupted:
            text += " (interrupted: rerun the same command to finish)"
        return text


class _InProcess:
    """Videos in this process: one after the other (the sequential reference), or
    ``setup.streams`` at a time stepped together."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.startup_seconds = 0.0

    def run(self, work: WorkList) -> None:
        start = time.perf_counter()
        worker = Worker(self.setup)
        self.startup_seconds = time.perf_counter() - start
        held: dict[str, VideoJob] = {}
        while not work.complete:
            new = work.take(list(held.values()), self.setup.streams)
            held.update((job.name, job) for job in new)
            for result in worker.advance(new):
                work.finished(held.pop(result["name"]), {**result, "round_trip_seconds": result["worker_seconds"]})


def _note_truncated(summary: CorpusSummary, record: dict | None) -> None:
    entry = truncated_entry(record)
    if entry is not None:
        summary.truncated[entry["name"]] = entry


def job_inputs(jobs: list[VideoJob]) -> dict[str, Path]:
    """{label: path} of every file and folder the jobs read."""
    inputs: dict[str, Path] = {}
    for job in jobs:
        for label, given in ((f"the video {job.name!r}", job.source), (f"the mask of {job.name!r}", job.first_mask),
                             (f"the masks of {job.name!r}", job.masks_dir)):
            if given is not None:
                inputs[label] = given
    return inputs


def check_corpus_output(out: Path, inputs: Mapping[str, str | Path | None], create: bool = True) -> Path:
    """The output gate (:func:`runtime.io.gate.check_output`) for a corpus ``--out``: not
    equal to, inside or holding any input (``inputs``: the command line's roots, such as
    ``--videos``/``--masks-dir``/``--dataset``, and every video); new, empty, or written by a
    corpus run (its marker); created (``create``) and proven writable. Raises InputError."""
    from ..io.gate import check_output, folder_entries

    with output_refusals_as_input_errors():
        return check_output(out, "--out", inputs, tool="corpus", owner="a corpus run", noun="results",
                            earlier=[] if records.owned(out) else folder_entries(out, (records.LOCK,)),
                            owned=records.owned(out), create=create)


def run_corpus(
    jobs: list[VideoJob],
    setup: WorkerSetup,
    *,
    workers: int = 0,
    ray: str | None = None,
    ray_actors: int | None = None,
    cpus_per_actor: int = 1,
    retries: int = 2,
    overwrite: bool = False,
    on_video: Callable[[dict], None] | None = None,
    inputs: Mapping[str, str | Path | None] | None = None,
) -> CorpusSummary:
    """Segment every job into ``setup.out/<name>/``; see the module docstring.

    setup.fingerprint must be set (:func:`runtime.corpus.worker.fingerprint_of`): finished
    videos with the same fingerprint are skipped, others are refused unless ``overwrite``
    (which redoes every listed video). retries: how many times a video whose worker died is
    retried. on_video(result) is called after each video. inputs: {flag: path} of the
    command line's input roots (``--videos``, ``--masks-dir``, ``--dataset``), checked with
    every video's own files by :func:`check_corpus_output`. Raises InputError for bad input
    (another run holding ``--out`` too), RunnerError if the runner cannot start.
    """
    if not jobs:
        raise InputError("no video to segment")
    if retries < 0:
        raise InputError(f"--retries must be 0 or more, got {retries}")
    out = Path(setup.out)
    check_corpus_output(out, {**(inputs or {}), **job_inputs(jobs)})
    with records.locked(out):
        return _run_locked(jobs, setup, out, workers, ray, ray_actors, cpus_per_actor, retries, overwrite, on_video)


def _run_locked(jobs, setup, out, workers, ray, ray_actors, cpus_per_actor, retries, overwrite, on_video):
    records.claim_output(out, setup.fingerprint, overwrite)
    summary = CorpusSummary(out, "this process", len(jobs), started_at=records.utc_now())
    pending = []
    for job in jobs:
        if not overwrite and records.is_done(out, job.name, setup.fingerprint):
            summary.skipped.append(job.name)
            _note_truncated(summary, records.read_record(out, job.name))
        else:
            records.clear_video(out, job.name)
            pending.append(job)
    setup = replace(setup, out=out, crash_at=os.environ.get(CRASH_ENV) or setup.crash_at)
    if ray is not None:
        from .ray_runner import RayRunner

        runner = RayRunner(setup, ray, ray_actors, cpus_per_actor)
    elif workers > 0:
        from .local_pool import LocalPool

        runner = LocalPool(replace(setup, threads=setup.threads or max(1, usable_cpus() // workers)), workers)
        summary.runner = f"{workers} local worker process(es)"
    else:
        runner = _InProcess(setup)
    if setup.streams > 1:
        summary.runner += f", {setup.streams} videos stepped together per worker"

    def on_result(result: dict) -> None:
        name = result["name"]
        if result["retried"]:
            summary.retried[name] = result["attempts"]
        if result["status"] == "done":
            summary.done.append(name)
            summary.frames += result["record"]["frames"]
            _note_truncated(summary, result["record"])
        else:
            records.clear_video(out, name)
            summary.failed[name] = result["error"]
        if "worker_seconds" in result:
            summary.worker_seconds += result["worker_seconds"]
            summary.dispatch_seconds += result["round_trip_seconds"] - result["worker_seconds"]
        if on_video is not None:
            on_video(result)

    start = time.perf_counter()
    try:
        if pending:
            runner.run(WorkList(pending, retries, on_result))
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        summary.seconds = time.perf_counter() - start
        summary.finished_at = records.utc_now()
        if ray is not None:
            summary.runner = f"Ray ({ray}): {runner.plan or 'not started, nothing to do'}" + (
                f", {setup.streams} videos stepped together per actor" if setup.streams > 1 else "")
        summary.startup_seconds = getattr(runner, "startup_seconds", 0.0)
        records.write_json(out / records.SUMMARY, summary.as_dict())
    return summary
