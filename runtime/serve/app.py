"""The web layer: a FastAPI application over a :class:`runtime.serve.hub.SessionHub`.

Routes (docs/serve.md has the reference): ``/healthz``, ``/readyz``, ``/metrics``,
``/v1/info``, ``/v1/sessions`` (open), ``/v1/sessions/{sid}/frames`` (push),
``/v1/sessions/{sid}/masks/{n}`` (fetch), ``DELETE /v1/sessions/{sid}``, ``/v1/grabcut``,
``/v1/sources`` (server-side sources: :mod:`runtime.serve.routes_sources`),
the WebSockets ``/v1/sessions/{sid}/stream`` and ``/v1/sessions/{sid}/subscribe``, the page
at ``/`` and ``/static``. Decoding, encoding and waiting run in worker threads, the engine
in the hub's scheduler thread: the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from .codec import decode_frame, decode_label_map
from .errors import ServeError, bad_input
from .hub import SessionEvent, SessionHub
from .limits import BodyLimit
from .metrics import ServeMetrics
from .routes_sources import source_routes
from .security import check_bearer, token_matches

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_WAIT_S = 60.0
WS_UNAUTHORIZED, WS_UNKNOWN = 4401, 4404
_IMAGE = {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["frame", "mask"],
    "properties": {"frame": {"type": "string", "format": "binary", "description": "JPEG or PNG"},
                   "mask": {"type": "string", "format": "binary",
                            "description": "PNG label map: 0 background, 255 void, 1..254 objects"}}}}}}
_FRAME = {"content": {
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["frame"], "properties": {
        "frame": {"type": "string", "format": "binary"},
        "mask": {"type": "string", "format": "binary", "description": "adds or replaces objects at this frame"}}}}}}
_GRABCUT = {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["frame", "box"], "properties": {
        "frame": {"type": "string", "format": "binary"}, "box": {"type": "string", "example": "10,10,50,40"},
        "mask": {"type": "string", "format": "binary", "description": "hint: 0 unknown, 1 object, 2 background"}}}}}}


def _error_response(exc: ServeError) -> JSONResponse:
    headers = {"Retry-After": f"{exc.retry_after:g}"} if exc.retry_after is not None else None
    return JSONResponse(exc.payload(), status_code=exc.status, headers=headers)


async def _upload(form, name: str, required: bool = True) -> bytes | None:
    part = form.get(name)
    if part is None:
        if required:
            raise bad_input(f"the multipart field {name!r} is missing")
        return None
    return await part.read() if hasattr(part, "read") else str(part).encode()


def create_app(hub: SessionHub, metrics: ServeMetrics | None = None) -> FastAPI:
    """The application serving ``hub`` (its config gives the token, CORS and limits)."""
    config = hub.config
    app = FastAPI(title="stmae-serve", version="1", summary="STMAE video object segmentation sessions",
                  description="Open a session with a first frame and its mask, push frames, receive label maps.")
    app.state.hub, app.state.metrics = hub, metrics
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=config.max_request_bytes)

    @app.exception_handler(ServeError)
    async def serve_error(_request: Request, exc: ServeError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(bad_input(f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": {"code": f"http_{exc.status_code}", "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    bearer_scheme = HTTPBearer(auto_error=False, description="the server's token (--token or STMAE_SERVE_TOKEN)")

    def authorized(request: Request, _credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)):
        check_bearer(config.token, request.headers.get("authorization"))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz():
        """200 when the model is loaded and the server takes sessions; 503 while draining."""
        if hub.ready:
            return {"ready": True}
        reason = "draining" if hub.draining else "not started" if hub.failure is None else "failed"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)

    @app.get("/metrics", tags=["health"], dependencies=[Depends(authorized)], response_class=Response)
    async def prometheus():
        """Prometheus text format (this server's registry)."""
        if metrics is None:
            raise ServeError(404, "no_metrics", "this server keeps no metrics")
        return Response(metrics.render(), media_type=metrics.content_type)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorized)])

    @v1.get("/info", tags=["sessions"])
    async def info() -> dict:
        """The model served and the limits."""
        return {"model": hub.model_info, "processing_size": hub.session_config.size, "limits": config.limits()}

    @v1.post("/sessions", status_code=201, tags=["sessions"], openapi_extra={"requestBody": _IMAGE})
    async def open_session(request: Request) -> dict:
        """Open a session: multipart ``frame`` (JPEG/PNG) and ``mask`` (PNG labels); the
        frame is frame 0 (its result is fetched like any other)."""
        form = await request.form(max_part_size=config.max_request_bytes)
        frame_bytes, mask_bytes = await _upload(form, "frame"), await _upload(form, "mask")

        return await run_in_threadpool(hub.open_encoded, frame_bytes, mask_bytes)

    @v1.post("/sessions/{sid}/frames", status_code=202, tags=["sessions"], openapi_extra={"requestBody": _FRAME})
    async def push(sid: str, request: Request) -> dict:
        """Push the next frame: a raw JPEG/PNG body, or multipart ``frame`` [+ ``mask``].
        202 with its index; 429 when the session's queue is full."""
        mask_bytes = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_part_size=config.max_request_bytes)
            frame_bytes, mask_bytes = await _upload(form, "frame"), await _upload(form, "mask", required=False)
        else:
            frame_bytes = await request.body()

        return {"frame_index": await run_in_threadpool(hub.push_encoded, sid, frame_bytes, mask_bytes)}

    @v1.get("/sessions/{sid}/masks/{index}", tags=["sessions"], response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "palette PNG label map"}})
    async def mask(sid: str, index: int, timeout_s: float = 10.0):
        """Frame ``index``'s label map (palette PNG, the frame's size), waiting up to
        ``timeout_s`` (504 after). Headers: X-Frame-Index, X-Latency-Ms, X-Objects."""
        if not 0 <= timeout_s <= MAX_WAIT_S:
            raise bad_input(f"timeout_s must be 0..{MAX_WAIT_S:g} seconds, got {timeout_s:g}")
        outcome = await run_in_threadpool(hub.wait_result, sid, index, timeout_s)
        if outcome.error is not None:
            raise outcome.error
        png = await run_in_threadpool(hub.result_png, sid, outcome)
        return Response(png, media_type="image/png", headers={
            "X-Frame-Index": str(outcome.index), "X-Latency-Ms": f"{outcome.latency_ms:.3f}",
            "X-Objects": ",".join(map(str, outcome.objects))})

    @v1.delete("/sessions/{sid}", tags=["sessions"])
    async def close(sid: str) -> dict:
        """Close the session (queued frames dropped, lane freed); its statistics."""
        return await run_in_threadpool(hub.close_session, sid)

    @v1.post("/grabcut", tags=["tools"], response_class=Response, openapi_extra={"requestBody": _GRABCUT},
             responses={200: {"content": {"image/png": {}}, "description": "grey PNG, 1 = object"}})
    async def grabcut(request: Request):
        """A first-mask proposal inside ``box`` (x0,y0,x1,y1 pixels) by OpenCV GrabCut."""
        form = await request.form(max_part_size=config.max_request_bytes)
        frame_bytes, hint_bytes = await _upload(form, "frame"), await _upload(form, "mask", required=False)
        box_text = (await _upload(form, "box")).decode("utf-8", "replace")
        return Response(await run_in_threadpool(_grabcut, frame_bytes, box_text, hint_bytes, config.max_pixels),
                        media_type="image/png")

    @app.websocket("/v1/sessions/{sid}/stream")
    async def stream(websocket: WebSocket, sid: str) -> None:
        await _stream(websocket, hub, sid)

    @app.websocket("/v1/sessions/{sid}/subscribe")
    async def subscribe(websocket: WebSocket, sid: str) -> None:
        await _subscribe(websocket, hub, sid)

    app.include_router(v1)
    app.include_router(source_routes(hub), dependencies=[Depends(authorized)])

    @app.get("/", include_in_schema=False)
    async def page():
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            raise ServeError(404, "no_page", "this installation has no browser page (runtime/serve/static)")
        return FileResponse(index)

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app


def _grabcut(frame_bytes: bytes, box_text: str, hint_bytes: bytes | None, max_pixels: int) -> bytes:
    """The proposal of :func:`runtime.serve.grabcut.propose` as a grey PNG (1 = object)."""
    import io

    import numpy as np
    from PIL import Image

    from ..errors import InputError
    from . import grabcut

    frame = decode_frame(frame_bytes, "the frame", max_pixels)
    hint = decode_label_map(hint_bytes, "the hint mask", max_pixels)[0] if hint_bytes else None
    try:
        proposal = grabcut.propose(frame, grabcut.parse_box(box_text), hint)
    except InputError as exc:
        raise bad_input(str(exc)) from None
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(proposal, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# ---- WebSockets ----------------------------------------------------------------------------
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
    events: asyncio.Queue[SessionEvent] = asyncio.Queue()

    def listener(event: SessionEvent) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    try:
        pending = hub.add_listener(sid, listener, consume=True)
    except ServeError as exc:
        await _send_error(websocket, exc)
        await websocket.close(code=WS_UNKNOWN)
        return
    state = {"outstanding": len(pending), "closing": False, "closed": False, "frames": 0, "pushing": None}
    sequences: dict[int, int] = {}  # frame index in the session -> its sequence on this socket
    for outcome in pending:
        events.put_nowait(SessionEvent(sid, outcome))
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
        hub.remove_listener(sid, listener)
        if not send_task.done():
            send_task.cancel()
        if not state["closed"]:  # the client went away mid-stream: its lane is freed now
            await run_in_threadpool(_close_quietly, hub, sid, "the stream's client disconnected")


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
    loop = asyncio.get_running_loop()
    latest: dict = {"event": None, "dropped": 0}
    wake = asyncio.Event()

    def put(event: SessionEvent) -> None:
        if latest["event"] is not None and latest["event"].outcome is not None and event.outcome is not None:
            latest["dropped"] += 1
            hub.observer.dropped(1, "subscriber")
        latest["event"] = event
        wake.set()

    def listener(event: SessionEvent) -> None:
        loop.call_soon_threadsafe(put, event)

    try:
        hub.add_listener(sid, listener, consume=False)
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
        hub.remove_listener(sid, listener)
