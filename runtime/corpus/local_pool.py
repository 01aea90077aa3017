"""N local worker processes (no Ray): the default for one machine.

Each worker process (started with ``spawn``) builds its backend once and segments one
video at a time, or up to ``--streams`` stepped together. Videos are handed to it over its
own pipe as it frees lanes: the parent sends the new videos, the worker works until one
of its videos has its outcome and sends it back (:meth:`Worker.advance`), so the parent
always knows which videos a worker holds. A worker that dies (killed, OOM) is replaced
and all its videos go back to the work list (:class:`runtime.corpus.dispatch.WorkList`).
Workers ignore SIGINT: on Ctrl-C the parent stops them.

Every wait is bounded: a worker that has not built its backend within
:data:`START_SECONDS` stops the run with one line; joining a worker that is stopped or
gone waits :data:`JOIN_SECONDS`, then it is terminated, then killed.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait

from .dispatch import RunnerError, WorkList
from .worker import Worker
from .worker_setup import WorkerSetup

_USER_ERRORS = ("InputError", "BackendUnavailable", "CheckpointError", "ExportManifestError")
START_SECONDS = 600.0  # a worker process builds its backend within this
JOIN_SECONDS = 5.0  # a stopped worker exits within this, else it is terminated, then killed


def _worker_main(conn: Connection, setup: WorkerSetup) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = Worker(setup)
    except Exception as exc:
        conn.send(("init_error", type(exc).__name__, str(exc)))
        return
    conn.send(("ready",))
    while True:
        jobs = conn.recv()
        if jobs is None:
            return
        conn.send(("results", worker.advance(jobs)))


@dataclass
class _Slot:
    process: mp.process.BaseProcess
    conn: Connection
    ready: bool = False
    busy: bool = False  # advance() sent, its results not back yet
    jobs: dict = field(default_factory=dict)  # name -> (job, time handed out)
    started: float = field(default_factory=time.monotonic)


def _end(process: mp.process.BaseProcess, grace: float = JOIN_SECONDS) -> None:
    """Wait ``grace`` seconds for ``process`` to exit, then terminate it, then kill it:
    returns with the process gone (a worker stuck in a driver call may ignore SIGTERM)."""
    process.join(grace)
    for stop in (process.terminate, process.kill):
        if not process.is_alive():
            return
        stop()
        process.join(JOIN_SECONDS)


def _device_for(device: str, index: int) -> str:
    """Spread plain 'cuda' workers over the visible GPUs."""
    if device != "cuda":
        return device
    import torch

    count = torch.cuda.device_count()
    return f"cuda:{index % count}" if count > 1 else device


class LocalPool:
    """Runs videos on ``workers`` processes; see :meth:`run`."""

    def __init__(self, setup: WorkerSetup, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.setup = setup
        self.workers = workers
        self._ctx = mp.get_context("spawn")
        self._started = 0
        self.startup_seconds = 0.0  # until the first worker had its backend

    def _start(self) -> _Slot:
        setup = replace(self.setup, backend=self.setup.backend.with_device(
            _device_for(self.setup.backend.device, self._started)))
        self._started += 1
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(child, setup), daemon=True,
                                    name=f"stmae-worker-{self._started}")
        process.start()
        child.close()
        return _Slot(process, parent)

    def run(self, work: WorkList) -> None:
        """Hand out ``work`` until every video has its final outcome."""
        self._t0 = time.perf_counter()
        slots = [self._start() for _ in range(min(self.workers, work.remaining))]
        try:
            while not work.complete:
                for slot in slots:
                    if slot.ready and not slot.busy:
                        new = work.take([job for job, _ in slot.jobs.values()], self.setup.streams)
                        if new or slot.jobs:
                            now = time.perf_counter()
                            slot.jobs.update((job.name, (job, now)) for job in new)
                            slot.conn.send(new)
                            slot.busy = True
                waitables = [s.conn for s in slots] + [s.process.sentinel for s in slots]
                ready = set(wait(waitables, timeout=self._start_wait(slots)))
                for slot in list(slots):
                    if slot.conn in ready or slot.process.sentinel in ready:
                        if not self._receive(slot, work):
                            slots.remove(slot)
                            if not work.complete:
                                slots.append(self._start())
        finally:
            self._stop(slots)

    def _start_wait(self, slots: list[_Slot]) -> float | None:
        """Seconds the run may wait for a message: None while a worker is working; else
        until the oldest starting worker's START_SECONDS are up (RunnerError when they are)."""
        if any(slot.ready and slot.busy for slot in slots):
            return None
        starting = [slot.started for slot in slots if not slot.ready]
        if not starting:
            return None
        left = min(starting) + START_SECONDS - time.monotonic()
        if left <= 0:
            raise RunnerError(
                f"a worker process did not build its backend within {START_SECONDS:g} s (stuck loading the model "
                f"or initialising the device); check --device and the checkpoint or export, then rerun (videos "
                f"already done are kept)")
        return left

    def _receive(self, slot: _Slot, work: WorkList) -> bool:
        """Handle what ``slot`` sent; False if its process is gone."""
        gone = False
        try:
            message = slot.conn.recv() if slot.conn.poll() else None
        except (EOFError, OSError):
            message, gone = None, True
        if message is None:
            if not gone and slot.process.is_alive():
                return True  # woken by nothing readable yet
            _end(slot.process)
            code = slot.process.exitcode
            if not slot.ready:
                raise RunnerError(f"a worker process exited with code {code} while starting")
            for job, _ in slot.jobs.values():
                work.died(job, f"worker process exited with code {code}")
            slot.jobs = {}
            slot.conn.close()
            return False
        kind = message[0]
        if kind == "ready":
            slot.ready = True
            if not self.startup_seconds:
                self.startup_seconds = time.perf_counter() - self._t0
        elif kind == "init_error":
            _, name, text = message
            raise RunnerError(text if name in _USER_ERRORS else f"{name}: {text}", user_error=name in _USER_ERRORS)
        elif kind == "results":
            slot.busy = False
            for result in message[1]:
                job, sent_at = slot.jobs.pop(result["name"])
                work.finished(job, {**result, "round_trip_seconds": time.perf_counter() - sent_at})
        return True

    def _stop(self, slots: list[_Slot]) -> None:
        for slot in slots:
            try:
                if slot.process.is_alive():
                    slot.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for slot in slots:
            _end(slot.process, 2 if not slot.jobs else 0.1)
            slot.conn.close()
