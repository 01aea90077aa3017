"""The WebSockets of a server, an APIRouter that :func:`runtime.serve.app.create_app`
includes: ``/v1/sessions/{sid}/stream`` (frames in, results out in frame order) and
``/v1/sessions/{sid}/subscribe`` (a session's newest results). Each checks the token
itself (a browser sends it as the first message). Every hub call that can block (a lock,
a Ray round trip) and every encoding runs in a worker thread: the event loop only moves
bytes.

A slow consumer is bounded: a stream holds at most ``queue_depth`` frames in flight (pushed,
and their results not yet handed to the socket); further frames get a ``queue_full`` error
message. Sending waits for the socket to drain (uvicorn's flow control), so a client that
does not read stops being read, and a subscriber that falls behind skips to the newest result.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from .errors import ServeError, bad_input
from .hub import SessionEvent, SessionHub
from .security import token_matches

WS_UNAUTHORIZED, WS_UNKNOWN = 4401, 4404


def stream_routes(hub: SessionHub) -> APIRouter:
    """The WebSocket routes over ``hub``."""
    router = APIRouter()

    @router.websocket("/v1/sessions/{sid}/stream")
    async def stream(websocket: WebSocket, sid: str) -> None:
        await _stream(websocket, hub, sid)

    @router.websocket("/v1/sessions/{sid}/subscribe")
    async def subscribe(websocket: WebSocket, sid: str) -> None:
        await _subscribe(websocket, hub, sid)

    return router


async def _authorize(websocket: WebSocket, hub: SessionHub) -> bool:
    """Accept the socket; the token from the Authorization header or a first
    ``{"type": "auth", "token": ...}`` message (browsers cannot set headers); else close 4401."""
    await websocket.accept()
    token = hub.config.token
    if token is None:
        return True
    from .security import bearer

    if token_matches(token, bearer(websocket.headers.get("authorization"))):
        return True
    try:
        first = json.loads(await asyncio.wait_for(websocket.receive_text(), timeout=10))
        given = first.get("token") if isinstance(first, dict) and first.get("type") == "auth" else None
    except (asyncio.TimeoutError, ValueError, KeyError, TypeError, WebSocketDisconnect, RuntimeError):
        given = None
    if isinstance(given, str) and token_matches(token, given):
        return True
    await _send_error(websocket, ServeError(401, "unauthorized", "send the server's token in the Authorization "
                                            "header or as the first message {\"type\":\"auth\",\"token\":...}"))
    await websocket.close(code=WS_UNAUTHORIZED)
    return False


async def _send_error(websocket: WebSocket, exc: ServeError, index: int | None = None, **extra) -> None:
    """``extra``: more keys of the message (a stream's ``sequence``)."""
    await websocket.send_text(json.dumps({"type": "error", "code": exc.code, "message": exc.message,
                                          "frame_index": index, **extra}))


async def _send_result(websocket: WebSocket, hub: SessionHub, sid: str, outcome, fps: float | None,
                       **extra) -> None:
    if outcome.error is not None:
        await _send_error(websocket, outcome.error, outcome.index, **extra)
        return
    png = await run_in_threadpool(hub.result_png, sid, outcome)
    await websocket.send_text(json.dumps({"type": "result", "frame_index": outcome.index,
                                          "latency_ms": round(outcome.latency_ms, 3),
                                          "objects": list(outcome.objects), "fps": fps, **extra}))
    await websocket.send_bytes(png)


class _Rate:
    """Frames/s of the last results sent (a sliding window of 30)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def tick(self) -> float | None:
        import time

        self.times = (self.times + [time.monotonic()])[-30:]
        span = self.times[-1] - self.times[0]
        return round((len(self.times) - 1) / span, 2) if span > 0 else None


async def _stream(websocket: WebSocket, hub: SessionHub, sid: str) -> None:
    """Frames in (binary), results out in frame order; see docs/serve.md. ``sequence`` in a
    result or a refusal: the position of its frame among the binary frames received on this
    socket (0 first; masks not counted; None for frames sent before the stream opened)."""
    if not await _authorize(websocket, hub):
        return
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[SessionEvent] = asyncio.Queue()  # at most queue_depth outcomes: see "outstanding"
    early: list[SessionEvent] | None = []  # events that came before add_listener returned

    def deliver(event: SessionEvent) -> None:  # on the event loop
        if early is not None:
            early.append(event)
        else:
            events.put_nowait(event)

    listener = _on_loop(deliver)
    try:
        pending = await run_in_threadpool(hub.add_listener, sid, listener, True)
    except ServeError as exc:
        await _send_error(websocket, exc)
        await websocket.close(code=WS_UNKNOWN)
        return
    state = {"outstanding": len(pending), "closing": False, "closed": False, "frames": 0, "pushing": None}
    sequences: dict[int, int] = {}  # frame index in the session -> its sequence on this socket
    for event in [SessionEvent(sid, outcome) for outcome in pending] + early:  # in frame order
        events.put_nowait(event)
    early = None
    depth, limit = hub.config.queue_depth, hub.config.max_request_bytes
    rate = _Rate()

    async def sender() -> None:
        while True:
            event = await events.get()
            if event.closed is not None:
                if not state["closing"]:
                    await _send_error(websocket, ServeError(409, "session_closed", f"session {sid} was closed "
                                                            f"({event.closed})"))
                state["closed"] = True
                await websocket.close()
                return
            index = event.outcome.index
            if index not in sequences and state["pushing"] is not None:  # its push has not returned yet
                await asyncio.shield(state["pushing"])
            await _send_result(websocket, hub, sid, event.outcome, rate.tick(), sequence=sequences.pop(index, None))
            state["outstanding"] -= 1
            if state["closing"] and state["outstanding"] == 0:
                await run_in_threadpool(_close_quietly, hub, sid, "closed by the client")
                state["closed"] = True
                await websocket.close()
                return

    send_task = asyncio.create_task(sender())
    mask_next: bool = False
    mask_bytes: bytes | None = None
    try:
        while not send_task.done():
            receive = asyncio.create_task(websocket.receive())
            done, _ = await asyncio.wait({receive, send_task}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            text, data = message.get("text"), message.get("bytes")
            try:  # any message is activity: an open stream is not idle
                await run_in_threadpool(hub.touch, sid)
            except ServeError as exc:
                await _send_error(websocket, exc)
                break
            if text is not None:
                try:
                    kind = json.loads(text).get("type")
                except (ValueError, AttributeError):
                    kind = None
                if kind == "ping":
                    await websocket.send_text(json.dumps({"type": "pong"}))
                elif kind == "mask":
                    mask_next = True
                elif kind == "close":
                    state["closing"] = True
                    if state["outstanding"] == 0:
                        await run_in_threadpool(_close_quietly, hub, sid, "closed by the client")
                        state["closed"] = True
                        await websocket.close()
                        break
                elif kind != "auth":
                    await _send_error(websocket, bad_input(f"unknown message {text[:80]!r}; send frames as binary "
                                                           f"messages, or {{\"type\": \"mask\"|\"close\"|"
                                                           f"\"ping\"}}"))
                continue
            if data is None:
                continue
            is_mask, mask_next = mask_next, False
            sequence = None if is_mask else state["frames"]
            state["frames"] += 0 if is_mask else 1
            if len(data) > limit:
                mask_bytes = None
                await _send_error(websocket, ServeError(413, "too_large", f"the message is {len(data)} bytes, above "
                                                        f"this server's limit of {limit} (--max-request-bytes)"),
                                  sequence=sequence)
                continue
            if is_mask:
                mask_bytes = data
                continue
            if state["closing"]:
                await _send_error(websocket, ServeError(409, "closing", "the stream is closing; frames after "
                                                        "{\"type\":\"close\"} are not taken"), sequence=sequence)
                continue
            if state["outstanding"] >= depth:
                mask_bytes = None
                hub.observer.dropped(1, "queue_full")
                await _send_error(websocket, ServeError(429, "queue_full", f"{depth} frames are in flight, the most "
                                                        f"this session may have (--queue-depth); wait for results"),
                                  sequence=sequence)
                continue
            given_mask, mask_bytes = mask_bytes, None
            state["outstanding"] += 1
            state["pushing"] = pushed = loop.create_future()
            try:
                sequences[await run_in_threadpool(hub.push_encoded, sid, data, given_mask)] = sequence
            except ServeError as exc:
                state["outstanding"] -= 1
                await _send_error(websocket, exc, sequence=sequence)
                if exc.status in (404, 409):
                    break
            finally:
                state["pushing"] = None
                pushed.set_result(None)
    except WebSocketDisconnect:
        pass
    finally:
        await run_in_threadpool(hub.remove_listener, sid, listener)
        if not send_task.done():
            send_task.cancel()
        if not state["closed"]:  # the client went away mid-stream: its lane is freed now
            await run_in_threadpool(_close_quietly, hub, sid, "the stream's client disconnected")


def _on_loop(handle: Callable[[SessionEvent], None]) -> Callable[[SessionEvent], None]:
    """A hub listener (called from the hub's threads) that runs ``handle(event)`` on this
    event loop; events after the loop closed (the server stopped) are dropped."""
    loop = asyncio.get_running_loop()

    def listener(event: SessionEvent) -> None:
        try:
            loop.call_soon_threadsafe(handle, event)
        except RuntimeError:  # the loop is closed
            pass

    return listener


def _close_quietly(hub: SessionHub, sid: str, reason: str) -> None:
    try:
        hub.close_session(sid, reason)
    except ServeError:
        pass


async def _subscribe(websocket: WebSocket, hub: SessionHub, sid: str) -> None:
    """The session's results as they come, latest only: a slow subscriber skips to the
    newest result (``dropped`` counts what it missed)."""
    if not await _authorize(websocket, hub):
        return
    latest: dict = {"event": None, "dropped": 0}
    wake = asyncio.Event()

    def put(event: SessionEvent) -> None:
        if latest["event"] is not None and latest["event"].outcome is not None and event.outcome is not None:
            latest["dropped"] += 1
            hub.observer.dropped(1, "subscriber")
        latest["event"] = event
        wake.set()

    listener = _on_loop(put)
    try:
        await run_in_threadpool(hub.add_listener, sid, listener, False)
    except ServeError as exc:
        await _send_error(websocket, exc)
        await websocket.close(code=WS_UNKNOWN)
        return
    rate = _Rate()
    try:
        while True:
            await wake.wait()
            wake.clear()
            event, latest["event"] = latest["event"], None
            if event is None:
                continue
            if event.closed is not None:
                await websocket.send_text(json.dumps({"type": "closed", "reason": event.closed,
                                                      "dropped": latest["dropped"]}))
                await websocket.close()
                return
            await _send_result(websocket, hub, sid, event.outcome, rate.tick())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        await run_in_threadpool(hub.remove_listener, sid, listener)
