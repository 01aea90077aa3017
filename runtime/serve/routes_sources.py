"""The routes of server-side sources (:mod:`runtime.serve.sources`), an APIRouter that
:func:`runtime.serve.app.create_app` includes behind its token check:

- ``POST /v1/sources`` ``{"url": ...}``: open a source (403 unless ``--allow-source``
  allows it); 201 with its status;
- ``GET /v1/sources/{id}``: its status (frames received, segmented, dropped);
- ``GET /v1/sources/{id}/snapshot``: its newest frame as JPEG, header ``X-Frame-Index``;
- ``POST /v1/sources/{id}/session``: multipart ``mask`` (PNG labels) for snapshot
  ``frame_index``: 201, a session fed by the source in real time;
- ``DELETE /v1/sources/{id}``: close the source and its session.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .errors import bad_input
from .sources import SOURCE_TIMEOUT_S, SourceManager

_SESSION = {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["mask", "frame_index"], "properties": {
        "mask": {"type": "string", "format": "binary", "description": "PNG label map of the snapshot frame"},
        "frame_index": {"type": "integer", "description": "the snapshot's X-Frame-Index"}}}}}}


class SourceRequest(BaseModel):
    url: str


def source_routes(hub) -> APIRouter:
    """The routes over a :class:`runtime.serve.sources.SourceManager` of ``hub``."""
    manager = SourceManager(hub)
    router = APIRouter(prefix="/v1/sources", tags=["sources"])
    router.manager = manager  # type: ignore[attr-defined]

    @router.post("", status_code=201)
    async def open_source(body: SourceRequest) -> dict:
        """Open a stream or camera the server reads (its URL must start with a prefix the
        operator allowed: --allow-source); its first frame is read before the answer."""
        return await run_in_threadpool(manager.open, body.url)

    @router.get("/{source_id}")
    async def status(source_id: str) -> dict:
        """The source: its size, frames received, segmented and dropped, its session;
        ``closed``: why it was closed (null while open)."""
        return manager.status(source_id)

    @router.get("/{source_id}/snapshot", response_class=Response,
                responses={200: {"content": {"image/jpeg": {}}, "description": "the newest frame"}})
    async def snapshot(source_id: str):
        """The newest frame (JPEG); X-Frame-Index: its index in the source, for the session."""
        index, jpeg = await run_in_threadpool(manager.get(source_id).snapshot, SOURCE_TIMEOUT_S)
        return Response(jpeg, media_type="image/jpeg", headers={"X-Frame-Index": str(index)})

    @router.post("/{source_id}/session", status_code=201, openapi_extra={"requestBody": _SESSION})
    async def open_session(source_id: str, request: Request) -> dict:
        """Open a session on snapshot ``frame_index`` with its ``mask``; the source's newest
        frames then feed it (older ones dropped while the engine is busy). Watch it with
        WS /v1/sessions/{session_id}/subscribe."""
        source = manager.get(source_id)
        form = await request.form(max_part_size=hub.config.max_request_bytes)
        mask, text = form.get("mask"), str(form.get("frame_index", "")).strip()
        if not hasattr(mask, "read"):
            raise bad_input("the multipart field 'mask' (a PNG file: the label map drawn on the snapshot) is missing")
        mask = await mask.read()
        if not text.isdigit():
            raise bad_input(f"frame_index {text[:20]!r} is not a frame index; give the X-Frame-Index of the snapshot "
                            f"the mask was drawn on")
        return await run_in_threadpool(source.open_session, int(text), mask)

    @router.delete("/{source_id}")
    async def close(source_id: str) -> dict:
        """Close the source and its session; its last status."""
        return await run_in_threadpool(manager.close, source_id)

    return router
