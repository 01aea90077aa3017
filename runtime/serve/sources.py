"""Server-side sources: a stream or camera the server itself reads (``POST /v1/sources``),
whose frames feed one session in real time.

- **Allow-list**: a source's URL (an rtsp/rtmp/http(s)/udp/tcp stream or ``/dev/videoN``)
  must start with one of the operator's ``--allow-source`` prefixes
  (:attr:`runtime.serve.config.ServeConfig.allowed_sources`); none by default, and then
  every source is refused (403).
- **Reading** is the live path's: :func:`runtime.live.source.open_live` (opening and each
  read bounded by :data:`SOURCE_TIMEOUT_S`), a :class:`runtime.live.realtime.CaptureThread`
  into a :class:`runtime.live.realtime.LatestSlot`. The first frame is read before the
  source is accepted.
- **Snapshots**: the newest frame as JPEG; the last :data:`SNAPSHOTS_KEPT` frames handed out
  as snapshots are kept, so a client can draw a mask on one and open the session on it.
- **The session** starts on that snapshot frame and its mask; a feeder thread then pushes
  the source's newest frame each time the previous one's result is in: when the engine is
  busy only the newest frame waits, the older ones are dropped (counted, reason
  ``"source"``). Its results go to the hub's listeners (``WS /v1/sessions/{sid}/subscribe``).
- **Ends**: closing the source closes its session, and closing the session (or the source
  ending, or the server stopping) closes the source.
"""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict

import numpy as np

from ..errors import InputError
from ..live.source import is_live_input, open_live
from .codec import decode_label_map
from .errors import ServeError, bad_input
from .hub import SessionEvent

SOURCE_TIMEOUT_S = 10.0  # opening a source, and each read, give up after this long
SNAPSHOTS_KEPT = 8
_CLOSED_KEPT = 256
_POLL_S = 0.1


def check_source_url(url: object, allowed: tuple[str, ...]) -> str:
    """``url`` if it is a live source starting with one of ``allowed``; ServeError 400 (not
    a source URL) or 403 (no prefix allows it) otherwise."""
    if not isinstance(url, str) or not url.strip() or any(c.isspace() or not c.isprintable() for c in url):
        raise bad_input('give the source as {"url": "rtsp://..."}: a stream URL or /dev/videoN without spaces')
    if not allowed:
        raise ServeError(403, "source_not_allowed", "this server opens no server-side sources; its operator "
                         "allows them with --allow-source PREFIX (e.g. --allow-source rtsp://camera1.local/)")
    if not any(url.startswith(prefix) for prefix in allowed):
        raise ServeError(403, "source_not_allowed", f"{url} does not start with a prefix this server allows; its "
                         f"operator adds prefixes with --allow-source PREFIX")
    if not is_live_input(url):
        raise bad_input(f"{url} is not a live source: give an rtsp/rtmp/http(s)/udp/tcp URL or /dev/videoN")
    return url


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _stopped(hub) -> bool:
    return bool(hub.draining or getattr(hub, "stopped", False) or getattr(hub, "failure", None) is not None)


class _Source:
    """One open source: its capture thread, newest frame, snapshots and (once started) its
    session, fed by :meth:`_feed` on its own thread."""

    def __init__(self, manager: "SourceManager", source_id: str, url: str, source, first: np.ndarray) -> None:
        self.manager, self.hub = manager, manager.hub
        self.id, self.url, self.source = source_id, url, source
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        from ..live import realtime  # the live path's capture (it loads torch: only once a source opens)

        self._realtime = realtime
        self.sink = realtime.LatestSlot()
        self.capture = realtime.CaptureThread(source, self.sink)
        self.cond = threading.Condition()
        self.latest = None  # runtime.live.realtime.Captured
        self.snapshots: OrderedDict[int, np.ndarray] = OrderedDict()
        self.session_id: str | None = None
        self.session_closed: str | None = None
        self.done = -1  # the newest session frame whose result is in
        self.pushed = self.dropped = 0
        self._drops_seen = 0
        self.stop = threading.Event()
        self.finished = False
        self.thread = threading.Thread(target=self._run, name=f"stmae-serve-source-{source_id}", daemon=True)

    def start(self) -> None:
        self.capture.start()
        self.thread.start()

    # ---- the feeder thread ------------------------------------------------------------------
    def _run(self) -> None:
        reason = "closed"
        try:
            while True:
                if self.stop.is_set():
                    reason = self.manager.closing_reason(self.id)
                    break
                if _stopped(self.hub):
                    reason = "the server is shutting down"
                    break
                if self.session_closed is not None:
                    reason = f"its session was closed ({self.session_closed})"
                    break
                item = self.sink.get(_POLL_S)
                if item is None:
                    continue
                if item is self._realtime._END:
                    reason = "the source ended: " + self._realtime._source_end(self.capture, self.source)[1]
                    break
                with self.cond:
                    self.latest = item
                    self.cond.notify_all()
                if self.session_id is not None:
                    self._feed(item)
        finally:
            self._finish(reason)

    def _feed(self, item) -> None:
        """Push ``item``'s frame to the session and wait for its result (the frames the
        capture thread took meanwhile replace each other in the slot: dropped)."""
        drops, self._drops_seen = self.sink.dropped - self._drops_seen, self.sink.dropped
        if drops:
            self.dropped += drops
            self.hub.observer.dropped(drops, "source")
        try:
            index = self.hub.push(self.session_id, item.frame) if hasattr(self.hub, "push") else \
                self.hub.push_encoded(self.session_id, _png(item.frame))
        except ServeError as exc:
            if exc.status == 429:  # cannot happen with one frame in flight; counted if it does
                self.dropped += 1
                self.hub.observer.dropped(1, "source")
                return
            with self.cond:
                self.session_closed = self.session_closed or exc.message
            return
        self.pushed += 1
        self._wait_result(index)

    def _wait_result(self, index: int) -> None:
        with self.cond:
            while self.done < index and self.session_closed is None and not self.stop.is_set() \
                    and not _stopped(self.hub):
                self.cond.wait(_POLL_S)

    def listener(self, event: SessionEvent) -> None:
        """The session's events (called by the hub, maybe under its lock: only records)."""
        with self.cond:
            if event.closed is not None:
                self.session_closed = event.closed
            elif event.outcome is not None:
                self.done = max(self.done, event.outcome.index)
            self.cond.notify_all()

    def _finish(self, reason: str) -> None:
        self._realtime._stop_capture(self.capture, self.sink, self.source)
        sid = self.session_id
        if sid is not None:
            try:
                self.hub.remove_listener(sid, self.listener)
                if self.session_closed is None:
                    self.hub.close_session(sid, f"its source was closed ({reason})")
            except ServeError:
                pass
        self.manager.forget(self, reason)
        with self.cond:
            self.finished = True
            self.cond.notify_all()  # a snapshot waiting for a first frame

    # ---- what requests ask ------------------------------------------------------------------
    def status(self) -> dict:
        with self.cond:
            latest = self.latest.index if self.latest is not None else None
            return {"source_id": self.id, "url": self.url, "width": self.width, "height": self.height,
                    "fps": getattr(self.source, "fps", None), "session_id": self.session_id,
                    "latest_frame_index": latest, "received": self.sink.received, "segmented": self.done + 1,
                    "dropped": self.dropped}

    def snapshot(self, timeout: float) -> tuple[int, bytes]:
        with self.cond:
            if not self.cond.wait_for(lambda: self.latest is not None or self.finished, timeout):
                raise ServeError(504, "timeout", f"source {self.id} sent no frame within {timeout:g} s; retry")
            item = self.latest
            if item is None:
                raise ServeError(409, "source_closed", f"source {self.id} was closed before its first frame")
            self.snapshots[item.index] = item.frame
            self.snapshots.move_to_end(item.index)
            while len(self.snapshots) > SNAPSHOTS_KEPT:
                self.snapshots.popitem(last=False)
        return item.index, _jpeg(item.frame)

    def open_session(self, frame_index: int, mask: bytes) -> dict:
        with self.cond:
            if self.session_id is not None:
                raise ServeError(409, "source_busy", f"source {self.id} already feeds session {self.session_id}; "
                                 f"subscribe to it (WS /v1/sessions/{self.session_id}/subscribe) or close it first")
            frame = self.snapshots.get(frame_index)
        if frame is None:
            raise ServeError(409, "snapshot_gone", f"frame {frame_index} of source {self.id} is not a snapshot "
                             f"this server still holds; take one (GET /v1/sources/{self.id}/snapshot) and draw the "
                             f"mask on it")
        if hasattr(self.hub, "open_session"):
            labels, palette = decode_label_map(mask, "the mask", self.hub.config.max_pixels)
            opened = self.hub.open_session(frame, labels, palette)
        else:
            opened = self.hub.open_encoded(_png(frame), mask)
        sid = opened["session_id"]
        pending = self.hub.add_listener(sid, self.listener, consume=True)  # results are the subscribers'
        with self.cond:
            self._drops_seen = self.sink.dropped  # drops count from the session's start
            self.session_id = sid
            for outcome in pending:
                self.done = max(self.done, outcome.index)
        return {**opened, "source_id": self.id, "source_frame_index": frame_index}


class SourceManager:
    """The open sources of one server (``hub``: a :class:`runtime.serve.hub.SessionHub` or
    :class:`runtime.serve.ray_router.RayHub`; its config has the allow-list and limits)."""

    def __init__(self, hub, timeout: float = SOURCE_TIMEOUT_S) -> None:
        self.hub, self.timeout = hub, timeout
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self._closing: dict[str, str] = {}
        self._closed: OrderedDict[str, dict] = OrderedDict()  # closed sources' last status

    def open(self, url: object) -> dict:
        """Open ``url`` (allowed, and sending frames within the timeout); its status."""
        config = self.hub.config
        url = check_source_url(url, config.allowed_sources)
        if _stopped(self.hub):
            raise ServeError(503, "draining", "the server is shutting down and opens no sources", retry_after=5)
        with self._lock:
            if len(self._sources) >= config.max_sessions:
                raise ServeError(429, "too_many_sources", f"{len(self._sources)} sources are open, the most this "
                                 f"server takes (--max-sessions); close one (DELETE /v1/sources/ID)", retry_after=1)
        try:
            source = open_live(url, timeout=self.timeout)
        except InputError as exc:
            raise ServeError(502, "source_failed", str(exc).splitlines()[0]) from None
        try:
            first = source.first_frame()
            if first.shape[0] * first.shape[1] > config.max_pixels:
                raise ServeError(413, "too_large", f"{url} sends {first.shape[1]}x{first.shape[0]} frames, above "
                                 f"this server's limit of {config.max_pixels} pixels a frame")
        except InputError as exc:
            source.close()
            raise ServeError(502, "source_failed", str(exc).splitlines()[0]) from None
        except BaseException:
            source.close()
            raise
        opened = _Source(self, secrets.token_hex(8), url, source, first)
        with self._lock:
            self._sources[opened.id] = opened
        opened.start()
        return opened.status()

    def get(self, source_id: str) -> _Source:
        with self._lock:
            source = self._sources.get(source_id)
            if source is None:
                if source_id in self._closed:
                    raise ServeError(409, "source_closed", f"source {source_id} was closed "
                                     f"({self._closed[source_id]['closed']}); open it again")
                raise ServeError(404, "unknown_source", f"no source {source_id}; open one with POST /v1/sources")
            return source

    def status(self, source_id: str) -> dict:
        """The source's status; a closed one's last status with ``closed``: why."""
        with self._lock:
            if source_id in self._closed:
                return dict(self._closed[source_id])
        return {**self.get(source_id).status(), "closed": None}

    def close(self, source_id: str, reason: str = "closed by the client") -> dict:
        """Close the source (and its session); its last status."""
        source = self.get(source_id)
        with self._lock:
            self._closing.setdefault(source_id, reason)
        source.stop.set()
        with source.cond:
            source.cond.notify_all()
        source.thread.join(self.timeout)
        return {**source.status(), "closed": reason}

    def closing_reason(self, source_id: str) -> str:
        with self._lock:
            return self._closing.get(source_id, "closed")

    def forget(self, source: _Source, reason: str) -> None:
        status = {**source.status(), "closed": reason}
        with self._lock:
            self._sources.pop(source.id, None)
            self._closing.pop(source.id, None)
            self._closed[source.id] = status
            while len(self._closed) > _CLOSED_KEPT:
                self._closed.popitem(last=False)

    def close_all(self, reason: str = "the server stopped") -> None:
        with self._lock:
            ids = list(self._sources)
        for source_id in ids:
            try:
                self.close(source_id, reason)
            except ServeError:
                pass
