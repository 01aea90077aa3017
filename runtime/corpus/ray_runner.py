"""The corpus on Ray: one actor per GPU, or per group of CPU cores; each actor holds a
backend (a :class:`runtime.corpus.worker.Worker`) and segments one video at a time, or
up to ``--streams`` stepped together by the batched engine; videos are handed out as
actors free lanes (each ``advance`` call brings new videos and returns when one of the
actor's videos has its outcome). An actor that dies (killed, OOM, node lost) is replaced
and all its videos go back to the work list.

Where the actors write: ``--out`` and the inputs must be paths every node sees (one
machine, or a shared file system such as NFS); the toolkit must be installed on every node.
Ray is imported here only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from .dispatch import RunnerError, WorkList
from .worker import Worker
from .worker_setup import WorkerSetup


class _SegmentActor:
    """Ray actor body: builds the backend; ``ready()`` says whether that worked."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.error = None
        try:
            self.worker = Worker(setup)
        except Exception as exc:  # reported by ready(), so the driver can say why
            self.worker, self.error = None, (type(exc).__name__, str(exc))

    def ready(self):
        return self.error

    def advance(self, jobs) -> list:
        return self.worker.advance(jobs)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RunnerError("--ray needs the ray package: pip install 'ray>=2.9'", user_error=True) from None
    return ray


def connect(ray, address: str) -> bool:
    """Join or start Ray; True if this call started the connection (and must end it).

    'local': a new Ray instance on this machine; 'auto': the cluster running here
    (``ray start --head``); anything else: that cluster's address (host:port or ray://...).
    """
    if ray.is_initialized():
        return False
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False)
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        hint = " (start one with: ray start --head)" if address == "auto" else ""
        raise RunnerError(f"--ray {address}: cannot connect to a Ray cluster{hint}: {exc}".splitlines()[0],
                          user_error=True) from None
    return True


class RayRunner:
    """Runs videos on Ray actors; see :meth:`run`.

    address: see :func:`connect`; actors: how many (default: one per GPU when the device
    is CUDA and the cluster has GPUs, else cluster CPUs // cpus_per_actor), never more
    than there are videos. A backend device 'auto' becomes 'cuda' if the cluster has GPUs
    (the driver's machine may have none), else 'cpu'.
    """

    def __init__(self, setup: WorkerSetup, address: str = "local", actors: int | None = None,
                 cpus_per_actor: int = 1) -> None:
        self.setup = setup
        self.address = address
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.startup_seconds = 0.0
        self.plan = ""

    def _actor_class(self, ray):
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if self.setup.backend.device == "auto":  # no --device: the cluster's GPUs if it has any
            device = "cuda" if gpus else "cpu"
            self.setup = replace(self.setup, backend=self.setup.backend.with_device(device))
        if self.setup.backend.device.startswith("cuda") and gpus:
            count = self.actors or gpus
            setup = replace(self.setup, backend=self.setup.backend.with_device("cuda"))
            self.plan = f"{count} actor(s), 1 GPU each"
            return ray.remote(num_gpus=1, num_cpus=1)(_SegmentActor), setup, count
        if self.setup.backend.device.startswith("cuda"):
            raise RunnerError("--device cuda but the Ray cluster has no GPU; pass --device cpu", user_error=True)
        cpus = int(resources.get("CPU", 1))
        count = self.actors or max(1, cpus // self.cpus_per_actor)
        setup = replace(self.setup, threads=self.cpus_per_actor)
        self.plan = f"{count} actor(s), {self.cpus_per_actor} CPU core(s) each"
        return ray.remote(num_cpus=self.cpus_per_actor)(_SegmentActor), setup, count

    def run(self, work: WorkList) -> None:
        """Hand out ``work`` until every video has its final outcome."""
        ray = _import_ray()
        start = time.perf_counter()
        owned = connect(ray, self.address)
        try:
            actor_class, setup, count = self._actor_class(ray)
            count = min(count, work.remaining)
            starting: dict = {}  # ready() ref -> actor
            running: dict = {}  # run() ref -> (actor, job, time sent)
            idle: list = []
            actors: list = []

            def start_actor() -> None:
                actor = actor_class.remote(setup)
                actors.append(actor)
                starting[actor.ready.remote()] = actor

            for _ in range(count):
                start_actor()
            try:
                self._loop(ray, work, starting, running, idle, start_actor, start)
            finally:
                for actor in actors:
                    ray.kill(actor, no_restart=True)
        finally:
            if owned:
                ray.shutdown()

    def _loop(self, ray, work: WorkList, starting: dict, running: dict, idle: list, start_actor, start) -> None:
        first_ready = True
        held: dict = {}  # actor -> {name: (job, time handed out)}
        while not work.complete:
            for actor in list(idle):
                mine = held.setdefault(actor, {})
                new = work.take([job for job, _ in mine.values()], self.setup.streams)
                if new or mine:
                    now = time.perf_counter()
                    mine.update((job.name, (job, now)) for job in new)
                    idle.remove(actor)
                    running[actor.advance.remote(new)] = actor
            done, _ = ray.wait(list(starting) + list(running), num_returns=1)
            ref = done[0]
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    error = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    raise RunnerError(f"a Ray actor died while starting: {exc}".splitlines()[0]) from None
                if error is not None:
                    user = error[0] in ("InputError", "BackendUnavailable", "CheckpointError", "ExportManifestError")
                    raise RunnerError(error[1] if user else f"{error[0]}: {error[1]}", user_error=user)
                if first_ready:
                    self.startup_seconds, first_ready = time.perf_counter() - start, False
                idle.append(actor)
                continue
            actor = running.pop(ref)
            mine = held.pop(actor, {})
            try:
                results = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
                ray.kill(actor, no_restart=True)
                for job, _ in mine.values():
                    work.died(job, f"Ray actor died ({type(exc).__name__})")
                if not work.complete:
                    start_actor()
                continue
            except ray.exceptions.RayTaskError as exc:  # the actor's state is unknown: replace it
                ray.kill(actor, no_restart=True)
                error = str(exc).splitlines()[-1]
                for job, _ in mine.values():
                    work.finished(job, {"name": job.name, "status": "failed", "error": error,
                                        "retriable": False, "record": None, "round_trip_seconds": 0.0})
                if not work.complete:
                    start_actor()
                continue
            now = time.perf_counter()
            for result in results:
                job, sent_at = mine.pop(result["name"])
                work.finished(job, {**result, "round_trip_seconds": now - sent_at})
            held[actor] = mine
            idle.append(actor)
