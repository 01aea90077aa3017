"""The web layer: a FastAPI application over a :class:`runtime.serve.hub.SessionHub`.

Routes (docs/serve.md has the reference): ``/healthz``, ``/readyz``, ``/metrics``,
``/v1/info``, ``/v1/sessions`` (open), ``/v1/sessions/{sid}/frames`` (push),
``/v1/sessions/{sid}/masks/{n}`` (fetch), ``DELETE /v1/sessions/{sid}``, ``/v1/grabcut``,
``/v1/sources`` (server-side sources: :mod:`runtime.serve.routes_sources`),
the WebSockets ``/v1/sessions/{sid}/stream`` and ``/v1/sessions/{sid}/subscribe``
(:mod:`runtime.serve.streams`), the page at ``/`` and ``/static``. Decoding, encoding and waiting run in worker threads, the engine
in the hub's scheduler thread: the event loop only moves bytes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from .codec import decode_frame, decode_label_map
from .errors import ServeError, bad_input
from .hub import SessionHub
from .limits import BodyLimit
from .metrics import ServeMetrics
from .routes_sources import source_routes
from .security import check_bearer
from .streams import stream_routes

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_WAIT_S = 60.0
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

    app.include_router(stream_routes(hub))  # its own token check (the first message may carry it)
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
