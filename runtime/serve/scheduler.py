"""The scheduler of a :class:`runtime.serve.hub.SessionHub`: the thread that steps the
ready frames of many sessions together through one
:class:`runtime.engine.stream_engine.StreamEngine`, and the outcomes it hands back.

- **Dynamic batching**: the scheduler waits for a ready frame, then up to ``max_wait_ms``
  for the other open sessions to have one too (no wait once every open session has one,
  or ``max_batch`` have), and steps at most ``max_batch`` sessions (the oldest waiting
  first) in one engine step. A session's frames are stepped in order, one per step, so its
  masks are those of segmenting it alone (``stmae-segment``).
- **Idle timeout**: a session without a request for ``idle_timeout_s`` (and nothing
  queued) is closed and its lane freed.
- Every engine call (``add_stream``, ``submit``, ``remove_stream``) runs on this thread.

:class:`BatchScheduler` is the hub's scheduling half (SessionHub derives from it): it reads
the hub's state under the hub's lock (``_cond``: ``_sessions``, ``_to_remove``,
``_stopping``, ``config``, ``engine``, ``observer``) and calls back ``_close_locked``,
``_keep_fetched`` and ``_levels``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import ServeError


@dataclass
class FrameOutcome:
    """One frame's result: index in the session; labels (H, W) uint8 with the session's
    label values (None if the step failed: ``error`` says why); objects: labels known;
    latency_ms: from the push to the result."""

    index: int
    labels: np.ndarray | None
    objects: tuple[int, ...]
    latency_ms: float
    error: ServeError | None = None
    _png: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SessionEvent:
    """What a listener receives: a frame's outcome, or the session's end (``closed``: why)."""

    session_id: str
    outcome: FrameOutcome | None = None
    closed: str | None = None


@dataclass
class _Queued:
    index: int
    item: object  # runtime.engine.types.StreamInput
    arrival: float


class BatchScheduler:
    """The scheduler thread's loop (see the module docstring); a mixin of
    :class:`runtime.serve.hub.SessionHub`, which owns the state it reads."""

    def _run(self) -> None:
        try:
            while True:
                batch, removals = self._next_batch()
                for sid in removals:
                    if sid in self.engine.streams:
                        self.engine.remove_stream(sid)
                if batch is None:
                    return
                if batch:
                    self._step(batch)
        except BaseException as exc:  # the scheduler must not die silently: readyz says so
            self.failure = exc
            with self._cond:
                self._stopping = True
                for sid in list(self._sessions):
                    self._close_locked(sid, f"the server failed: {type(exc).__name__}: {exc}")
            raise

    def _next_batch(self) -> tuple[list | None, list[str]]:
        """Under the lock: wait for ready frames (see the module docstring) and take a
        batch [(session, queued)]; None when stopping with nothing queued."""
        wait_s = self.config.max_wait_ms / 1000.0
        with self._cond:
            while True:
                removals, self._to_remove = self._to_remove, []
                if removals:
                    return [], removals
                self._expire_idle()
                ready = [s for s in self._sessions.values() if s.queue]
                if not ready:
                    if self._stopping:
                        return None, []
                    self._cond.wait(min(1.0, self.config.idle_timeout_s / 4))
                    continue
                first = min(s.queue[0].arrival for s in ready)
                enough = min(self.config.max_batch, len(self._sessions))
                left = first + wait_s - time.monotonic()
                if len(ready) >= enough or left <= 0 or self._stopping:
                    ready.sort(key=lambda s: s.queue[0].arrival)
                    batch = [(s, s.queue.popleft()) for s in ready[: self.config.max_batch]]
                    for session, _ in batch:
                        session.stepping += 1
                    self._levels()
                    return batch, []
                self._cond.wait(left)

    def _expire_idle(self) -> None:
        now = time.monotonic()
        for sid, session in list(self._sessions.items()):
            if not session.queue and now - session.last_active > self.config.idle_timeout_s:
                self._close_locked(sid, f"idle for more than {self.config.idle_timeout_s:g} s")

    def _step(self, batch: list) -> None:
        import torch

        inputs = {}
        for session, queued in batch:
            if session.sid not in self.engine.streams:
                self.engine.add_stream(session.sid)
            inputs[session.sid] = queued.item
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                results = self.engine.submit(inputs).wait()
            error = None
        except Exception as exc:  # the step failed: these frames fail, their sessions close
            results, error = {}, exc
        seconds = time.perf_counter() - start
        self.observer.step(len(batch), seconds)
        done = time.monotonic()
        events = []
        with self._cond:
            self.steps += 1
            for session, queued in batch:
                latency = (done - queued.arrival) * 1000.0
                if error is None:
                    result = results[session.sid]
                    outcome = FrameOutcome(queued.index, result.labels, tuple(result.object_labels), latency)
                    self.frames += 1
                else:
                    outcome = FrameOutcome(queued.index, None, tuple(sorted(session.known)), latency, ServeError(
                        500, "step_failed", f"the engine step failed ({type(error).__name__}: {error}); the "
                        f"session was closed, open a new one"))
                session.completed = queued.index + 1
                session.stepping -= 1
                session.latency_sum += latency
                if self._sessions.get(session.sid) is not session:
                    continue  # closed while its frame ran: nobody waits for it
                consumed = False
                for listener, consume in session.listeners:
                    events.append((listener, SessionEvent(session.sid, outcome)))
                    consumed = consumed or consume
                if consumed:
                    self._keep_fetched(session, outcome)
                else:
                    session.results[queued.index] = outcome
                if error is not None:
                    self._close_locked(session.sid, "the engine step failed")
            self._cond.notify_all()
        for listener, event in events:
            listener(event)

