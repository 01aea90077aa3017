"""The engine owner of a server: sessions and their bounded queues, over one
:class:`runtime.engine.stream_engine.StreamEngine` stepped by the scheduler thread of
:mod:`runtime.serve.scheduler` (dynamic batching, idle timeout).

Plain Python (threads, no ASGI): the web layer (:mod:`runtime.serve.app`) or a Ray Serve
replica calls it from any thread; every engine call (``add_stream``, ``submit``,
``remove_stream``) runs on the scheduler thread only.

- **A session** is one stream of the engine. It opens with its first frame and mask
  (frame 0); each pushed frame gets the next index. A frame is checked when it is pushed
  (:func:`runtime.engine.session.check_step_input`, the engine's own per-frame checks: size,
  mask, objects), so a refused frame never reaches the engine and the session survives it.
- **Backpressure**: a session holds at most ``queue_depth`` frames in flight (queued, or
  results not fetched yet); beyond that a push is refused (429). At most
  ``max_sessions`` sessions are open.
- **Drain**: :meth:`SessionHub.begin_drain` refuses new sessions and frames (503);
  :meth:`SessionHub.wait_drained` returns once the queued frames are stepped and their
  results fetched (or the timeout passed).
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Callable, Protocol

import numpy as np

from ..config import SessionConfig
from ..errors import InputError
from .codec import decode_frame, decode_label_map, encode_labels
from .config import ServeConfig
from .errors import ServeError, bad_input
from .scheduler import BatchScheduler, FrameOutcome, SessionEvent, _Queued

_CLOSED_KEPT = 1024  # closed sessions remembered (409 with the reason instead of 404)


class HubObserver(Protocol):
    """What the hub reports (:class:`runtime.serve.metrics.ServeMetrics` records it)."""

    def step(self, batch: int, seconds: float) -> None: ...

    def dropped(self, count: int, reason: str) -> None: ...

    def levels(self, sessions: int, queued: int) -> None: ...


class _Quiet:
    def step(self, batch: int, seconds: float) -> None:
        pass

    def dropped(self, count: int, reason: str) -> None:
        pass

    def levels(self, sessions: int, queued: int) -> None:
        pass


class _FrameCheck:
    """What :func:`runtime.engine.session.check_step_input` reads of a stream's schedule,
    as the session stands once its queued frames are stepped."""

    def __init__(self, geometry, frame_index: int, known: set[int]) -> None:
        self.geometry, self.frame_index, self.registry = geometry, frame_index, known


class _Session:
    def __init__(self, sid: str, height: int, width: int, palette: list[int] | None, geometry) -> None:
        self.sid, self.height, self.width, self.palette, self.geometry = sid, height, width, palette, geometry
        self.queue: deque[_Queued] = deque()
        self.next_index = 0
        self.completed = 0
        self.known: set[int] = set()
        self.results: OrderedDict[int, FrameOutcome] = OrderedDict()  # not fetched yet
        self.fetched: OrderedDict[int, FrameOutcome] = OrderedDict()  # kept for a second fetch
        self.listeners: list[tuple[Callable[[SessionEvent], None], bool]] = []
        self.created = self.last_active = time.monotonic()
        self.latency_sum = 0.0
        self.refused = 0
        self.stepping = 0  # taken by the scheduler, result not stored yet

    @property
    def in_flight(self) -> int:
        return len(self.queue) + self.stepping + len(self.results)

    def stats(self) -> dict:
        done = self.completed
        return {"session_id": self.sid, "frames": done, "queued": len(self.queue), "refused": self.refused,
                "objects": sorted(self.known), "seconds": round(time.monotonic() - self.created, 3),
                "mean_latency_ms": round(self.latency_sum / done, 3) if done else None}


class SessionHub(BatchScheduler):
    """Sessions over one engine (see the module docstring).

    backend: a runtime backend (:func:`runtime.backends.factory.create_backend`);
    session_config: the memory schedule and processing size of every session (as
    ``stmae-segment`` resolves it); config: the server's limits; observer: where steps,
    drops and levels are reported (metrics). Call :meth:`start` before use and
    :meth:`stop` at the end.
    """

    def __init__(self, backend, session_config: SessionConfig, config: ServeConfig,
                 observer: HubObserver | None = None, model_info: dict | None = None) -> None:
        from ..engine.stream_engine import EngineOptions, StreamEngine

        self.backend, self.session_config, self.config = backend, session_config, config
        self.observer = observer or _Quiet()
        self.model_info = dict(model_info or {})
        # the engine options stmae-segment uses (runtime.segment_video): the same masks
        options = replace(EngineOptions.fastest(backend.device, compile=False), keep_prob=False)
        self.engine = StreamEngine(backend, session_config, options)
        self._cond = threading.Condition()
        self._sessions: dict[str, _Session] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()
        self._to_remove: list[str] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.draining = False
        self.steps = 0
        self.frames = 0
        self.failure: BaseException | None = None

    # ---- life -----------------------------------------------------------------------------
    def start(self) -> "SessionHub":
        self._thread = threading.Thread(target=self._run, name="stmae-serve-scheduler", daemon=True)
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        """Serving: the scheduler runs and the server is not draining."""
        return self._thread is not None and self._thread.is_alive() and not self.draining and not self._stopping

    @property
    def stopped(self) -> bool:
        """:meth:`stop` was called, or the scheduler failed: no frame will be stepped."""
        return self._stopping

    def begin_drain(self) -> None:
        """Refuse new sessions and frames from now on (503); queued frames still run."""
        with self._cond:
            self.draining = True
            self._cond.notify_all()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every queued frame is stepped and every result fetched (True), or
        ``timeout`` seconds (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(s.in_flight for s in self._sessions.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self) -> None:
        """Stop the scheduler (after the queued frames) and close every session."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            for sid in list(self._sessions):
                self._close_locked(sid, "the server stopped")

    # ---- sessions -------------------------------------------------------------------------
    def _refuse_if_draining(self) -> None:
        if self.draining or self._stopping:
            raise ServeError(503, "draining", "the server is shutting down and takes no new frames; "
                             "retry on another server", retry_after=5)

    def _session(self, sid: str) -> _Session:
        session = self._sessions.get(sid)
        if session is None:
            if sid in self._closed:
                raise ServeError(409, "session_closed", f"session {sid} was closed ({self._closed[sid]}); "
                                 f"open a new session")
            raise ServeError(404, "unknown_session", f"no session {sid}; open one with POST /v1/sessions")
        return session

    def open_session(self, frame: np.ndarray, mask: np.ndarray, palette: list[int] | None = None) -> dict:
        """Open a session with its first frame (H, W, 3) uint8 RGB and mask (H, W) uint8
        labels (0 background, 255 void, 1..254 objects); the frame is queued as frame 0.
        Returns {"session_id", "width", "height", "objects", "frame_index": 0}."""
        from ..engine.transforms import FrameGeometry

        height, width = int(frame.shape[0]), int(frame.shape[1])
        with self._cond:
            self._refuse_if_draining()
            if len(self._sessions) >= self.config.max_sessions:
                self.observer.dropped(1, "too_many_sessions")
                raise ServeError(429, "too_many_sessions", f"{len(self._sessions)} sessions are open, the most this "
                                 f"server takes (--max-sessions); retry later or close a session", retry_after=1)
            sid = secrets.token_hex(8)
            session = _Session(sid, height, width, palette,
                               FrameGeometry.for_frame(height, width, self.session_config.size))
            self._enqueue(session, frame, mask)  # refused before the session exists
            self._sessions[sid] = session
            self._levels()
            self._cond.notify_all()
            return {"session_id": sid, "width": width, "height": height, "objects": sorted(session.known),
                    "frame_index": 0}

    def push(self, sid: str, frame: np.ndarray, mask: np.ndarray | None = None) -> int:
        """Queue the session's next frame (with an optional mask adding or replacing
        objects at it); returns its index. ServeError 400 (bad frame or mask), 429 (the
        session's queue is full), 503 (draining), 404/409 (no such session)."""
        with self._cond:
            self._refuse_if_draining()
            session = self._session(sid)
            session.last_active = time.monotonic()
            if session.in_flight >= self.config.queue_depth:
                session.refused += 1
                self.observer.dropped(1, "queue_full")
                raise ServeError(429, "queue_full", f"session {sid} has {session.in_flight} frames in flight, the "
                                 f"most it may (--queue-depth {self.config.queue_depth}); fetch results before "
                                 f"sending more", retry_after=0.1)
            try:
                index = self._enqueue(session, frame, mask)
            except ServeError:
                session.refused += 1
                self.observer.dropped(1, "bad_input")
                raise
            self._levels()
            self._cond.notify_all()
            return index

    def open_encoded(self, frame: bytes, mask: bytes) -> dict:
        """:meth:`open_session` from uploaded bytes (JPEG/PNG frame, PNG label map),
        decoded in the calling thread; refused frames are counted."""
        try:
            image = decode_frame(frame, "the frame", self.config.max_pixels)
            labels, palette = decode_label_map(mask, "the mask", self.config.max_pixels)
        except ServeError as exc:
            self.observer.dropped(1, exc.code)
            raise
        return self.open_session(image, labels, palette)

    def push_encoded(self, sid: str, frame: bytes, mask: bytes | None = None) -> int:
        """:meth:`push` from uploaded bytes, decoded in the calling thread; refused frames
        are counted (and the session's refusals)."""
        try:
            image = decode_frame(frame, "the frame", self.config.max_pixels)
            labels = decode_label_map(mask, "the mask", self.config.max_pixels)[0] if mask is not None else None
        except ServeError as exc:
            self.observer.dropped(1, exc.code)
            with self._cond:
                if sid in self._sessions:
                    self._sessions[sid].refused += 1
            raise
        return self.push(sid, image, labels)

    def _enqueue(self, session: _Session, frame: np.ndarray, mask: np.ndarray | None) -> int:
        from ..engine.session import check_step_input

        index = session.next_index
        try:
            item = check_step_input(_FrameCheck(session.geometry, index, session.known), frame, mask)
        except InputError as exc:
            raise bad_input(str(exc)) from None
        session.known.update(item.given)
        session.queue.append(_Queued(index, item, time.monotonic()))
        session.next_index += 1
        return index

    def wait_result(self, sid: str, index: int, timeout: float) -> FrameOutcome:
        """Frame ``index``'s outcome, waiting up to ``timeout`` seconds (504 after);
        fetching frees its place in the session's queue."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                session = self._session(sid)
                session.last_active = time.monotonic()
                if index in session.results:
                    outcome = session.results.pop(index)
                    self._keep_fetched(session, outcome)
                    self._cond.notify_all()
                    return outcome
                if index in session.fetched:
                    return session.fetched[index]
                if index < 0 or index >= session.next_index:
                    raise ServeError(404, "unknown_frame", f"session {sid} has no frame {index} (frames 0.."
                                     f"{session.next_index - 1} were sent)")
                if index < session.completed:
                    raise ServeError(404, "result_gone", f"the result of frame {index} was fetched and is no longer "
                                     f"kept; results are kept until fetched")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServeError(504, "timeout", f"frame {index} of session {sid} is not ready after "
                                     f"{timeout:g} s; fetch it again later")
                self._cond.wait(left)

    def _keep_fetched(self, session: _Session, outcome: FrameOutcome) -> None:
        session.fetched[outcome.index] = outcome
        while len(session.fetched) > self.config.queue_depth:
            session.fetched.popitem(last=False)

    def result_png(self, sid: str, outcome: FrameOutcome) -> bytes:
        """The outcome's label map as a palette PNG (the session's palette; encoded once,
        in the caller's thread)."""
        if outcome._png is None:
            with self._cond:
                palette = self._sessions[sid].palette if sid in self._sessions else None
            outcome._png = encode_labels(outcome.labels, palette, self.config.png_level)
        return outcome._png

    def add_listener(self, sid: str, listener: Callable[[SessionEvent], None],
                     consume: bool = True) -> list[FrameOutcome]:
        """Call ``listener(event)`` (from the scheduler thread: keep it short) with every
        later outcome of the session, and once when it closes. consume: the outcomes count
        as fetched (a stream's sender), and the results not fetched yet are returned (in
        frame order) for it to send first; else they stay for :meth:`wait_result` ([])."""
        with self._cond:
            session = self._session(sid)
            session.last_active = time.monotonic()
            session.listeners.append((listener, consume))
            if not consume:
                return []
            pending = [session.results.pop(i) for i in sorted(session.results)]
            for outcome in pending:
                self._keep_fetched(session, outcome)
            self._cond.notify_all()
            return pending

    def remove_listener(self, sid: str, listener: Callable[[SessionEvent], None]) -> None:
        with self._cond:
            session = self._sessions.get(sid)
            if session is not None:
                session.listeners = [(fn, c) for fn, c in session.listeners if fn is not listener]

    def touch(self, sid: str) -> None:
        """Count activity on the session (a message on its stream): it is not idle."""
        with self._cond:
            self._session(sid).last_active = time.monotonic()

    def close_session(self, sid: str, reason: str = "closed by the client") -> dict:
        """Close the session: its queued frames are dropped, its lane freed. Returns its
        statistics."""
        with self._cond:
            session = self._session(sid)
            stats = session.stats()
            self._close_locked(sid, reason)
            return stats

    def _close_locked(self, sid: str, reason: str) -> None:
        session = self._sessions.pop(sid)
        if session.queue:
            self.observer.dropped(len(session.queue), "closed")
        self._closed[sid] = reason
        while len(self._closed) > _CLOSED_KEPT:
            self._closed.popitem(last=False)
        self._to_remove.append(sid)
        self._levels()
        self._cond.notify_all()
        event = SessionEvent(sid, closed=reason)
        for listener, _ in session.listeners:
            listener(event)

    def session_ids(self) -> tuple[str, ...]:
        with self._cond:
            return tuple(self._sessions)

    def lanes_in_use(self) -> int:
        """Streams the engine holds (sessions whose lanes are not freed yet)."""
        with self._cond:
            return len(self.engine.streams)

    def queued(self) -> int:
        with self._cond:
            return sum(len(s.queue) for s in self._sessions.values())

    def _levels(self) -> None:
        self.observer.levels(len(self._sessions), sum(len(s.queue) for s in self._sessions.values()))
