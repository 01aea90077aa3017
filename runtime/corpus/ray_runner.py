"""The corpus on Ray: one actor per GPU, or per group of CPU cores; each actor holds a
backend (a :class:`runtime.corpus.worker.Worker`) and segments one video at a time, or
up to ``--streams`` stepped together by the batched engine; videos are handed out as
actors free lanes (each ``advance`` call brings new videos and returns when one of the
actor's videos has its outcome). An actor that dies (killed, OOM, node lost) is replaced
and all its videos go back to the work list.

Where the actors write: ``--out`` and the inputs must be paths every node sees (one
machine, or a shared file system such as NFS); the toolkit must be installed on every node.
Ray is imported here only.

Every wait is bounded (Ray itself retries a cluster's address without end): the address is
first tried with a TCP connect of :data:`PROBE_SECONDS`, ``ray.init`` to it must return
within :data:`CONNECT_SECONDS`, actors are refused up front when no node has the
resources one needs, and while no actor is working the wait for one to start ends after
:data:`START_SECONDS`. Each ends with one line that says what to do. Joining a cluster
(``auto`` or an address) prints one line naming it (address, nodes, CPU cores, GPUs).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import replace

from .dispatch import RunnerError, WorkList
from .worker import Worker
from .worker_setup import WorkerSetup

PROBE_SECONDS = 5.0  # TCP connect to the cluster's address before ray.init
CONNECT_SECONDS = 60.0  # ray.init to a running cluster
START_SECONDS = 600.0  # until an actor is ready, while none is working
_START_HINT = " (start one with: ray start --head)"


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


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port' or 'ray://host[:port]' (Ray Client, port 10001 by default)."""
    text = address.split("://", 1)[1] if "://" in address else address
    host, _, port = text.rstrip("/").rpartition(":")
    if not host:
        return (text.rstrip("/"), 10001) if address.startswith("ray://") else None
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _probe(address: str, flag: str, hint: str) -> None:
    """Refuse an address nothing answers at, within PROBE_SECONDS (a TCP connect)."""
    where = _host_port(address)
    if where is None:
        raise RunnerError(f"{flag}: {address!r} is not a Ray address: give host:port (the head's GCS port, "
                          f"6379 by default), ray://host:10001, 'auto' or 'local'", user_error=True)
    try:
        with socket.create_connection(where, timeout=PROBE_SECONDS):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, socket.timeout) else (exc.strerror or type(exc).__name__)
        raise RunnerError(
            f"{flag}: cannot connect to a Ray cluster{hint}: nothing answers at {where[0]}:{where[1]} ({reason} "
            f"within {PROBE_SECONDS:g} s); check the address ('ray status' on the head node prints it)",
            user_error=True) from None


def _init_within(ray, seconds: float, flag: str, hint: str, **kwargs) -> None:
    """ray.init(**kwargs) in a thread, waited for ``seconds`` at most: Ray retries a GCS
    that does not answer as one without end."""
    outcome: dict = {}

    def target() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="stmae-ray-init", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise RunnerError(f"{flag}: no answer from a Ray cluster{hint} within {seconds:g} s of connecting "
                          f"(is it the head's GCS port, 6379 by default, and the same Ray version?)", user_error=True)
    if "error" in outcome:
        raise outcome["error"]


def describe_cluster(ray) -> str:
    """'the Ray cluster at HOST:PORT: 2 node(s), 16 CPU core(s), 2 GPU(s)'."""
    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive", True)]
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - the line is informative only
        address = "?"
    return (f"the Ray cluster at {address}: {len(nodes)} node(s), {int(resources.get('CPU', 0))} CPU core(s), "
            f"{int(resources.get('GPU', 0))} GPU(s)")


def connect(ray, address: str) -> bool:
    """Join or start Ray; True if this call started the connection (and must end it).

    'local': a new Ray instance on this machine; 'auto': the cluster that ``RAY_ADDRESS``
    names, else the one running here (``ray start --head``); anything else: that cluster's
    address (host:port or ray://...). Joining prints one line on stderr naming the cluster.
    """
    if ray.is_initialized():
        return False
    kwargs = dict(logging_level=logging.ERROR, log_to_driver=False)
    flag = f"--ray {address}"
    hint = _START_HINT if address == "auto" else ""
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **kwargs)
            return True
        target = (os.environ.get("RAY_ADDRESS") or None) if address == "auto" else address
        if target is not None:
            _probe(target, flag + (f" (RAY_ADDRESS={target})" if address == "auto" else ""), hint)
        _init_within(ray, CONNECT_SECONDS, flag, hint, address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        if isinstance(exc, RunnerError):
            raise
        raise RunnerError(f"{flag}: cannot connect to a Ray cluster{hint}: {exc}".splitlines()[0],
                          user_error=True) from None
    print(f"{flag}: joined {describe_cluster(ray)}", file=sys.stderr, flush=True)
    return True


def _check_placement(ray, cpus: int, gpus: int, flag: str) -> None:
    """Refuse an actor that no node of the cluster can ever hold (it would wait forever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)] or [ray.cluster_resources()]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    largest = max(int(n.get("CPU", 0)) for n in nodes)
    total = int(sum(n.get("CPU", 0) for n in nodes))
    if gpus:
        raise RunnerError(f"no node of the Ray cluster has a GPU and {cpus} CPU core(s) for an actor; pass "
                          f"--device cpu, or add a GPU node", user_error=True)
    raise RunnerError(f"{flag} {cpus}: no node of the Ray cluster has {cpus} CPU cores (the largest has {largest}, "
                      f"{total} in all), so no actor could start; pass {flag} {max(largest, 1)} or less",
                      user_error=True)


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
            _check_placement(ray, 1, 1, "--cpus-per-actor")
            return ray.remote(num_gpus=1, num_cpus=1)(_SegmentActor), setup, count
        if self.setup.backend.device.startswith("cuda"):
            raise RunnerError("--device cuda but the Ray cluster has no GPU; pass --device cpu", user_error=True)
        cpus = int(resources.get("CPU", 1))
        count = self.actors or max(1, cpus // self.cpus_per_actor)
        setup = replace(self.setup, threads=self.cpus_per_actor)
        self.plan = f"{count} actor(s), {self.cpus_per_actor} CPU core(s) each"
        _check_placement(ray, self.cpus_per_actor, 0, "--cpus-per-actor")
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
            # Nothing working: only actors starting, which may never be placed (resources
            # held by other jobs, nodes gone): wait for them START_SECONDS at most.
            done, _ = ray.wait(list(starting) + list(running), num_returns=1,
                               timeout=None if running else START_SECONDS)
            if not done:
                free = ray.available_resources()
                raise RunnerError(
                    f"no Ray actor started within {START_SECONDS:g} s ({self.plan}; the cluster has "
                    f"{int(free.get('CPU', 0))} CPU core(s) and {int(free.get('GPU', 0))} GPU(s) free): other jobs "
                    f"may hold them; free them, or pass fewer --ray-actors / --cpus-per-actor", user_error=True)
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
