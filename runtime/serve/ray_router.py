"""The front process of ``stmae-serve --ray``: :class:`RayHub` answers the calls the web
layer (:mod:`runtime.serve.app`) makes of a :class:`runtime.serve.hub.SessionHub`, and
forwards each to the engine replica (:mod:`runtime.serve.ray_replicas`) that holds the
session.

- **Placement**: a new session goes to the healthy replica with the fewest open sessions
  (a replica that refuses it for being full, 429, passes it on to the next one).
- **Pinning**: the session's replica and that replica's incarnation are recorded; every call
  goes there and carries the incarnation.
- **A lost replica** (its actor died, or Ray Serve restarted it: a new incarnation) fails
  its own sessions only: every later call on them gets 503 ``replica_lost``, their
  streams end with that reason; the other sessions go on; new sessions go to healthy
  replicas. A monitor thread polls every replica (:data:`MONITOR_S`) for its health, its
  load, and the steps and drops its hub recorded (the front's ``/metrics``).
- Every Ray wait is bounded (:data:`CALL_SLACK_S` over the hub's own timeout).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable

from .config import ServeConfig
from .errors import ServeError
from .hub import FrameOutcome, SessionEvent, _Quiet
from .ray_replicas import ERROR, LOST, OK

MONITOR_S = 1.0
STATUS_TIMEOUT_S = 10.0
CALL_SLACK_S = 30.0  # a call may wait this long beyond the hub's own timeout (a replica restarting)
_ROUTES_KEPT = 4096  # closed sessions whose replica is remembered (their 409 comes from it)
LOST_MESSAGE = "the engine replica that held the session stopped; open a new session"


def replica_lost() -> ServeError:
    return ServeError(503, "replica_lost", LOST_MESSAGE)


@dataclass
class _Replica:
    index: int
    handle: object
    incarnation: str | None = None
    healthy: bool = False
    sessions: int = 0
    queued: int = 0
    dead: set = field(default_factory=set)  # incarnations known to be gone
    status: dict = field(default_factory=dict)


@dataclass
class _Route:
    replica: _Replica
    incarnation: str
    lost: bool = False
    opened: float = field(default_factory=time.monotonic)


class RayHub:
    """Sessions over N engine replicas, with a :class:`SessionHub`'s calls (the
    :class:`runtime.serve.hub_api.ServingHub` protocol; see the module docstring). handles: the replicas' DeploymentHandles, in order; session_config, config,
    model_info: what ``/v1/info`` reports; observer: the front's metrics; on_stop: called
    once by :meth:`stop` (deletes the deployment, ends Ray)."""

    def __init__(self, handles: list, session_config, config: ServeConfig, observer=None,
                 model_info: dict | None = None, on_stop: Callable[[], None] | None = None) -> None:
        import ray

        self._ray = ray
        self.session_config, self.config = session_config, config
        self.observer = observer or _Quiet()
        self.model_info = dict(model_info or {})
        self.replicas = [_Replica(i, h) for i, h in enumerate(handles)]
        self._routes: dict[str, _Route] = {}  # open sessions (as far as the front knows)
        self._closed: OrderedDict[str, _Route] = OrderedDict()  # closed ones, still answered by their replica
        self._listeners: dict = {}  # listener -> the stream's generator
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2 * len(handles) + 8, thread_name_prefix="stmae-ray-router")
        self._on_stop = on_stop
        self._stop = threading.Event()
        self.draining = False
        self.failure: BaseException | None = None
        for replica in self.replicas:
            self._poll(replica)
        self._monitor = threading.Thread(target=self._watch, name="stmae-ray-monitor", daemon=True)
        self._monitor.start()

    # ---- replicas ---------------------------------------------------------------------------
    def _dead(self, exc: BaseException) -> bool:
        return isinstance(exc, self._ray.exceptions.ActorDiedError)

    def _poll(self, replica: _Replica) -> None:
        """Ask the replica for its status; a new incarnation loses the old one's sessions."""
        asked = time.monotonic()
        try:
            status = replica.handle.status.remote().result(timeout_s=STATUS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure: not healthy now
            with self._lock:
                replica.healthy = False
                if self._dead(exc) and replica.incarnation is not None:
                    self._lose(replica, replica.incarnation)
            return
        with self._lock:
            if replica.incarnation is not None and status["incarnation"] != replica.incarnation:
                self._lose(replica, replica.incarnation)
            replica.incarnation, replica.status = status["incarnation"], status
            replica.healthy = bool(status["ready"]) and status["failure"] is None
            replica.sessions, replica.queued = status["sessions"], status["queued"]
            self._forget_closed(replica, set(status["session_ids"]), asked)
        for batch, seconds in status["steps"]:
            self.observer.step(batch, seconds)
        for count, reason in status["drops"]:
            self.observer.dropped(count, reason)

    def _forget_closed(self, replica: _Replica, open_ids: set, asked: float) -> None:
        """Under the lock: sessions the replica closed itself (idle timeout, failed step)
        move to the closed routes (opened before the status was asked: not one just opened)."""
        for sid, route in list(self._routes.items()):
            if route.replica is replica and route.incarnation == replica.incarnation and sid not in open_ids \
                    and route.opened < asked:
                self._closed_route(sid)

    def _closed_route(self, sid: str) -> None:
        """Under the lock: the session is closed; its route is kept a while (its replica
        answers later calls with 409 and the reason)."""
        route = self._routes.pop(sid, None)
        if route is not None:
            self._closed[sid] = route
            while len(self._closed) > _ROUTES_KEPT:
                self._closed.popitem(last=False)

    def _lose(self, replica: _Replica, incarnation: str) -> None:
        """Under the lock: that incarnation of the replica is gone, and its sessions."""
        replica.dead.add(incarnation)
        if replica.incarnation == incarnation:
            replica.healthy = False
        for sid, route in list(self._routes.items()) + list(self._closed.items()):
            if route.replica is replica and route.incarnation == incarnation:
                route.lost = True
                self._closed_route(sid)

    def _watch(self) -> None:
        while not self._stop.wait(MONITOR_S):
            try:
                polls = [self._pool.submit(self._poll, replica) for replica in self.replicas]
            except RuntimeError:  # the pool was shut down: stopping
                return
            for poll in polls:
                try:
                    poll.result()
                except Exception:  # noqa: BLE001 - the monitor goes on; the next poll tries again
                    pass
            with self._lock:
                self.observer.levels(sum(r.sessions for r in self.replicas if r.healthy),
                                     sum(r.queued for r in self.replicas if r.healthy))

    def _call(self, replica: _Replica, method: str, *args, timeout: float, incarnation: str | None = None):
        """The replica's reply to ``method(*args)``, unwrapped: a ServeError raised here for
        an error reply; replica_lost for a lost reply or a dead actor."""
        try:
            reply = getattr(replica.handle, method).remote(*args).result(timeout_s=timeout)
        except TimeoutError:
            raise ServeError(503, "replica_unavailable", f"engine replica {replica.index} did not answer within "
                             f"{timeout:g} s; retry later", retry_after=5) from None
        except self._ray.exceptions.RayActorError as exc:
            if self._dead(exc) and incarnation is not None:
                with self._lock:
                    self._lose(replica, incarnation)
                raise replica_lost() from None
            with self._lock:
                replica.healthy = False
            raise ServeError(503, "replica_unavailable", f"engine replica {replica.index} is unavailable "
                             f"({type(exc).__name__}); retry later", retry_after=5) from None
        return self._unwrap(replica, reply, incarnation)

    def _unwrap(self, replica: _Replica, reply: tuple, incarnation: str | None):
        if reply[0] == OK:
            return reply[1]
        if reply[0] == LOST:
            with self._lock:
                self._lose(replica, incarnation)
            raise replica_lost()
        if reply[0] == ERROR:
            raise ServeError(*reply[1:])
        raise ServeError(500, "bad_reply", f"engine replica {replica.index} sent {reply[0]!r}")

    def _route(self, sid: str) -> _Route:
        with self._lock:
            route = self._routes.get(sid) or self._closed.get(sid)
            if route is None:
                raise ServeError(404, "unknown_session", f"no session {sid}; open one with POST /v1/sessions")
            if route.lost or route.incarnation in route.replica.dead:
                route.lost = True
                raise replica_lost()
            return route

    def _session_call(self, sid: str, method: str, *args, timeout: float = STATUS_TIMEOUT_S):
        route = self._route(sid)
        return self._call(route.replica, method, route.incarnation, sid, *args, timeout=timeout,
                          incarnation=route.incarnation)

    # ---- what the web layer calls (SessionHub's names) ---------------------------------------
    @property
    def ready(self) -> bool:
        """Serving: not draining, and at least one replica healthy."""
        return not self.draining and not self._stop.is_set() and any(r.healthy for r in self.replicas)

    def open_encoded(self, frame: bytes, mask: bytes) -> dict:
        """Open the session on the least-loaded healthy replica (the next one if it is full)."""
        self._refuse_if_draining()
        with self._lock:
            order = sorted((r for r in self.replicas if r.healthy and r.incarnation is not None),
                           key=lambda r: (r.sessions, r.queued, r.index))
        if not order:
            raise ServeError(503, "no_replica", "no engine replica is healthy now; retry later", retry_after=5)
        refusal = None
        for replica in order:
            try:
                opened = self._call(replica, "open", frame, mask, timeout=STATUS_TIMEOUT_S + CALL_SLACK_S)
            except ServeError as exc:
                if exc.code in ("too_many_sessions", "replica_unavailable", "draining"):
                    refusal = exc
                    continue
                raise
            incarnation = opened.pop("incarnation")
            with self._lock:
                replica.sessions = opened.pop("load")
                self._routes[opened["session_id"]] = _Route(replica, incarnation)
            return opened
        raise refusal

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise ServeError(503, "draining", "the server is shutting down and takes no new frames; "
                             "retry on another server", retry_after=5)

    def push_encoded(self, sid: str, frame: bytes, mask: bytes | None = None) -> int:
        self._refuse_if_draining()
        return self._session_call(sid, "push", frame, mask)

    def wait_result(self, sid: str, index: int, timeout: float) -> FrameOutcome:
        """The frame's outcome; its label map travels as the PNG (``labels`` is None)."""
        return _outcome(self._session_call(sid, "result", index, timeout, timeout=timeout + CALL_SLACK_S))

    def result_png(self, sid: str, outcome: FrameOutcome) -> bytes:
        if outcome._png is None:
            raise ServeError(500, "no_result", f"frame {outcome.index} of session {sid} has no label map")
        return outcome._png

    def close_session(self, sid: str, reason: str = "closed by the client") -> dict:
        stats = self._session_call(sid, "close", reason)
        with self._lock:
            self._closed_route(sid)
        return stats

    def touch(self, sid: str) -> None:
        self._session_call(sid, "touch")

    def add_listener(self, sid: str, listener: Callable[[SessionEvent], None],
                     consume: bool = True) -> list[FrameOutcome]:
        """As :meth:`SessionHub.add_listener`: the replica streams the session's outcomes,
        a thread here calls ``listener``; a lost replica ends the stream with its reason."""
        route = self._route(sid)
        stream = route.replica.handle.options(stream=True).events.remote(route.incarnation, sid, consume)
        try:  # the first item, off any event loop and bounded
            first = self._pool.submit(next, stream).result(timeout=STATUS_TIMEOUT_S + CALL_SLACK_S)
        except FutureTimeout:
            stream.cancel()
            raise ServeError(503, "replica_unavailable", f"engine replica {route.replica.index} did not answer "
                             f"within {STATUS_TIMEOUT_S + CALL_SLACK_S:g} s; retry later", retry_after=5) from None
        except self._ray.exceptions.RayActorError:
            with self._lock:
                self._lose(route.replica, route.incarnation)
            raise replica_lost() from None
        pending = [_outcome(p) for p in self._unwrap(route.replica, first, route.incarnation)]
        with self._lock:
            self._listeners[listener] = stream
        threading.Thread(target=self._relay, args=(sid, route, stream, listener), daemon=True,
                         name="stmae-ray-events").start()
        return pending

    def _relay(self, sid: str, route: _Route, stream, listener) -> None:
        try:
            for kind, payload in stream:
                if kind == "closed":
                    listener(SessionEvent(sid, closed=payload))
                    return
                listener(SessionEvent(sid, _outcome(payload)))
        except Exception as exc:  # noqa: BLE001 - cancelled by remove_listener, or the replica died
            with self._lock:
                removed = listener not in self._listeners
                if self._dead(exc):
                    self._lose(route.replica, route.incarnation)
            if not removed:
                listener(SessionEvent(sid, closed=LOST_MESSAGE if self._dead(exc) else
                                      f"the stream from engine replica {route.replica.index} failed "
                                      f"({type(exc).__name__})"))
        finally:
            with self._lock:
                self._listeners.pop(listener, None)

    def remove_listener(self, sid: str, listener: Callable[[SessionEvent], None]) -> None:
        with self._lock:
            stream = self._listeners.pop(listener, None)
        if stream is not None:
            stream.cancel()

    def session_ids(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sid for sid, route in self._routes.items() if not route.lost)

    def queued(self) -> int:
        with self._lock:
            return sum(r.queued for r in self.replicas)

    def replica_of(self, sid: str) -> tuple[int, str]:
        """(replica index, incarnation) a session is pinned to."""
        route = self._route(sid)
        return route.replica.index, route.incarnation

    # ---- life ---------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Refuse new sessions here at once; the replicas refuse new frames as soon as the
        message reaches them (sent from a thread: this runs in a signal handler, on the
        event loop's thread, where a Ray wait is not allowed)."""
        self.draining = True

        def tell(replica: _Replica) -> None:
            try:
                replica.handle.begin_drain.remote().result(timeout_s=STATUS_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - a replica that is gone has nothing to drain
                pass

        for replica in self.replicas:
            self._pool.submit(tell, replica)

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        drained = True
        for replica in self.replicas:
            left = max(0.0, deadline - time.monotonic())
            try:
                drained = replica.handle.wait_drained.remote(left).result(timeout_s=left + CALL_SLACK_S) and drained
            except Exception:  # noqa: BLE001 - a replica that is gone has nothing to drain
                pass
        return drained

    def stop(self) -> None:
        """Stop the monitor and the streams, then ``on_stop`` (the replicas go)."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            streams = list(self._listeners.values())
            self._listeners.clear()
        for stream in streams:
            stream.cancel()
        self._monitor.join(timeout=STATUS_TIMEOUT_S + MONITOR_S)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._on_stop is not None:
            self._on_stop()


def _outcome(payload: dict) -> FrameOutcome:
    error = payload["error"]
    return FrameOutcome(payload["index"], None, tuple(payload["objects"]), payload["latency_ms"],
                        None if error is None else ServeError(*error), _png=payload["png"])
