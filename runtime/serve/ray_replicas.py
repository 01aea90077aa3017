"""Engine replicas on Ray Serve: each replica holds one :class:`runtime.serve.hub.SessionHub`
(with its own :class:`runtime.engine.stream_engine.StreamEngine`) on one GPU or a few CPU
cores; :func:`deploy` starts N of them and :class:`runtime.serve.ray_router.RayHub` (the
front process) routes every session to the replica that holds its memory.

- **One deployment per engine** (``stmae-engine-0`` .. ``-N-1``, one replica each, in one
  Serve application with a small ingress that lists them, so all N load in parallel): a
  :class:`ray.serve.handle.DeploymentHandle` reaches one engine, so a session stays with its
  memory.
- **Incarnations**: every replica draws a random id when it starts. A session records the
  id of the replica that opened it, and every call carries it: a replica that Ray Serve
  restarted (after a crash, a kill or a failed health check) answers ``lost`` instead of
  touching a session it never had, so a lost session gets a clear error, never wrong masks.
- **Replies** are plain tuples (:data:`OK`, :data:`ERROR`, :data:`LOST`): a
  :class:`runtime.serve.errors.ServeError` crosses the process boundary as its status, code
  and message; results cross as PNG bytes encoded in the replica (the session's palette).
- **Metrics**: the replica's hub reports to a :class:`_Recorder`; :meth:`EngineReplica.status`
  hands the recorded steps and drops to the front, whose ``/metrics`` then counts them.

Ray is imported here, in :mod:`runtime.serve.ray_router` and :mod:`runtime.serve.ray_launch`
only (inside functions: importing this module does not import Ray).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .config import ServeConfig
from .errors import ServeError

APP_NAME = "stmae-serve"
ENGINE_PREFIX = "stmae-engine-"
OK, ERROR, LOST = "ok", "error", "lost"
HEALTH_PERIOD_S = 2.0
HEALTH_TIMEOUT_S = 30.0
_RECORDED = 100_000  # steps/drops kept between two status() calls


def _error(exc: ServeError) -> tuple:
    return (ERROR, exc.status, exc.code, exc.message, exc.retry_after)


class _Recorder:
    """The replica hub's observer: steps and drops kept for the front's metrics."""

    def __init__(self) -> None:
        self.steps: deque[tuple[int, float]] = deque(maxlen=_RECORDED)
        self.drops: deque[tuple[int, str]] = deque(maxlen=_RECORDED)
        self.sessions = self.queued = 0

    def step(self, batch: int, seconds: float) -> None:
        self.steps.append((batch, seconds))

    def dropped(self, count: int, reason: str) -> None:
        self.drops.append((count, reason))

    def levels(self, sessions: int, queued: int) -> None:
        self.sessions, self.queued = sessions, queued

    def take(self) -> tuple[list, list]:
        steps = [self.steps.popleft() for _ in range(len(self.steps))]
        drops = [self.drops.popleft() for _ in range(len(self.drops))]
        return steps, drops


def outcome_payload(hub, sid: str, outcome) -> dict:
    """A :class:`runtime.serve.hub.FrameOutcome` as the front receives it: the label map as
    the palette PNG (``png``; None if the frame failed: ``error`` (status, code, message))."""
    error = outcome.error
    return {"index": outcome.index, "objects": list(outcome.objects), "latency_ms": outcome.latency_ms,
            "png": hub.result_png(sid, outcome) if error is None else None,
            "error": None if error is None else (error.status, error.code, error.message)}


class EngineReplica:
    """The body of one Ray Serve replica: one hub over one backend.

    make_backend: builds the backend in the replica (a picklable callable, e.g.
    ``functools.partial(runtime.cli._backend, args)``); session_config, config, model_info:
    as :class:`runtime.serve.hub.SessionHub` takes them; threads: torch CPU threads (None:
    torch's default). Every method but :meth:`status`, :meth:`open` and the drain takes the
    session's incarnation and answers (:data:`LOST`,) if it is not this replica's.
    """

    def __init__(self, make_backend: Callable[[], object], session_config, config: ServeConfig,
                 model_info: dict | None = None, threads: int | None = None) -> None:
        import torch

        from .hub import SessionHub

        if threads:
            torch.set_num_threads(threads)
        self.incarnation = secrets.token_hex(8)
        self.recorder = _Recorder()
        self.hub = SessionHub(make_backend(), session_config, config, self.recorder, model_info).start()
        # blocking hub calls (result waits up to 60 s) run here, not on the replica's event loop
        self.pool = ThreadPoolExecutor(max_workers=3 * config.max_sessions + 8, thread_name_prefix="stmae-replica")

    async def _run(self, incarnation: str | None, fn, *args) -> tuple:
        if incarnation is not None and incarnation != self.incarnation:
            return (LOST,)
        try:
            return (OK, await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args))
        except ServeError as exc:
            return _error(exc)

    def _identity(self) -> dict:
        import ray

        context = ray.get_runtime_context()
        return {"incarnation": self.incarnation, "actor_name": context.get_actor_name(), "pid": os.getpid(),
                "node": context.get_node_id()}

    async def actor(self):
        """This replica's Ray actor handle (to kill it in a fault test, as a crash would)."""
        import ray

        return ray.get_runtime_context().current_actor

    # ---- the front's calls ------------------------------------------------------------------
    async def status(self) -> dict:
        """Identity, readiness, load, and the steps/drops recorded since the last call."""
        hub = self.hub
        steps, drops = self.recorder.take()
        return {**self._identity(), "ready": hub.ready, "draining": hub.draining,
                "failure": None if hub.failure is None else f"{type(hub.failure).__name__}: {hub.failure}",
                "session_ids": hub.session_ids(), "sessions": len(hub.session_ids()), "queued": hub.queued(),
                "steps": steps, "drops": drops}

    async def open(self, frame: bytes, mask: bytes) -> tuple:
        """(OK, opened) where opened is :meth:`SessionHub.open_encoded`'s answer plus this
        replica's ``incarnation`` and ``load`` (sessions open)."""
        reply = await self._run(None, self.hub.open_encoded, frame, mask)
        if reply[0] == OK:
            reply = (OK, {**reply[1], "incarnation": self.incarnation, "load": len(self.hub.session_ids())})
        return reply

    async def push(self, incarnation: str, sid: str, frame: bytes, mask: bytes | None) -> tuple:
        return await self._run(incarnation, self.hub.push_encoded, sid, frame, mask)

    async def result(self, incarnation: str, sid: str, index: int, timeout: float) -> tuple:
        def fetch() -> dict:
            return outcome_payload(self.hub, sid, self.hub.wait_result(sid, index, timeout))

        return await self._run(incarnation, fetch)

    async def close(self, incarnation: str, sid: str, reason: str) -> tuple:
        return await self._run(incarnation, self.hub.close_session, sid, reason)

    async def touch(self, incarnation: str, sid: str) -> tuple:
        return await self._run(incarnation, self.hub.touch, sid)

    async def events(self, incarnation: str, sid: str, consume: bool):
        """A stream: first (OK, [pending outcome payloads]) (or an error/lost reply, and the
        end); then ("outcome", payload) per result and ("closed", reason) at the end. The
        listener goes when the front cancels the stream."""
        if incarnation != self.incarnation:
            yield (LOST,)
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def listener(event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        try:
            pending = await loop.run_in_executor(self.pool, self.hub.add_listener, sid, listener, consume)
        except ServeError as exc:
            yield _error(exc)
            return
        try:
            payloads = [await loop.run_in_executor(self.pool, outcome_payload, self.hub, sid, o) for o in pending]
            yield (OK, payloads)
            while True:
                event = await queue.get()
                if event.closed is not None:
                    yield ("closed", event.closed)
                    return
                yield ("outcome", await loop.run_in_executor(self.pool, outcome_payload, self.hub, sid,
                                                             event.outcome))
        finally:
            self.hub.remove_listener(sid, listener)

    async def begin_drain(self) -> None:
        self.hub.begin_drain()

    async def wait_drained(self, timeout: float) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.hub.wait_drained, timeout)

    # ---- Ray Serve's calls ------------------------------------------------------------------
    def check_health(self) -> None:
        """Ray Serve restarts the replica when this raises: the scheduler died."""
        if self.hub.failure is not None:
            raise RuntimeError(f"the scheduler failed: {type(self.hub.failure).__name__}: {self.hub.failure}")
        if not self.hub.draining and not self.hub.ready:
            raise RuntimeError("the scheduler thread is not running")

    def __del__(self) -> None:
        hub = getattr(self, "hub", None)
        if hub is not None:
            hub.stop()
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _Engines:
    """The application's ingress: holds the engines' handles (so one ``serve.run`` starts
    them all, in parallel) and names them."""

    def __init__(self, *engines) -> None:
        self.count = len(engines)

    def names(self) -> list[str]:
        return [f"{ENGINE_PREFIX}{i}" for i in range(self.count)]


def deploy(make_backend: Callable[[], object], session_config, config: ServeConfig, model_info: dict,
           replicas: int, actor_options: dict, threads: int | None, app_name: str,
           start_seconds: float) -> list:
    """Start ``replicas`` engines as the Serve application ``app_name`` on the connected
    Ray cluster (no HTTP proxy: the front process serves) and return their handles, in
    order. actor_options: each engine's ``ray_actor_options`` (num_cpus / num_gpus). Waits
    until every engine has loaded its model, ``start_seconds`` at most (then RunnerError)."""
    import logging

    from ray import serve

    from ..corpus.dispatch import RunnerError

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the startup line says what started
    serve.start(proxy_location="Disabled")
    engine = serve.deployment(EngineReplica)
    bound = [engine.options(
        name=f"{ENGINE_PREFIX}{i}", num_replicas=1, ray_actor_options=dict(actor_options),
        max_ongoing_requests=4 * config.max_sessions + 16, health_check_period_s=HEALTH_PERIOD_S,
        health_check_timeout_s=HEALTH_TIMEOUT_S, graceful_shutdown_timeout_s=config.drain_timeout_s,
    ).bind(make_backend, session_config, config, model_info, threads) for i in range(replicas)]
    ingress = serve.deployment(_Engines, name="engines", num_replicas=1, ray_actor_options={"num_cpus": 0})
    outcome: dict = {}

    def run() -> None:
        try:
            serve.run(ingress.bind(*bound), name=app_name, route_prefix=None)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="stmae-serve-deploy", daemon=True)
    thread.start()
    thread.join(start_seconds)
    if thread.is_alive():
        serve.delete(app_name, _blocking=False)
        raise RunnerError(f"the {replicas} engine replica(s) did not start within {start_seconds:g} s: the cluster "
                          f"may lack free resources ({actor_options} each); free them, or pass fewer --replicas",
                          user_error=True)
    if "error" in outcome:
        serve.delete(app_name, _blocking=False)
        text = str(outcome["error"]).strip().splitlines()
        raise RunnerError(f"an engine replica failed to start: {text[-1] if text else type(outcome['error']).__name__}")
    return [serve.get_deployment_handle(f"{ENGINE_PREFIX}{i}", app_name=app_name) for i in range(replicas)]
