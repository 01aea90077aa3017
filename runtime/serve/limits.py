"""The request-size cap: a body over ``--max-request-bytes`` gets 413 (a JSON error),
whether its size is announced (Content-Length, refused before it is read) or not
(chunked: counted as it arrives, refused once over)."""

from __future__ import annotations

import json

from .errors import ServeError


class _TooLarge(ServeError):
    pass


class BodyLimit:
    """ASGI middleware: HTTP bodies of at most ``limit`` bytes (WebSocket messages are
    checked by the stream handler)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    def _error(self, size: str) -> _TooLarge:
        return _TooLarge(413, "too_large", f"the request body is {size} bytes, above this server's limit of "
                         f"{self.limit} bytes (--max-request-bytes); send smaller frames")

    async def _refuse(self, send, exc: ServeError) -> None:
        body = json.dumps(exc.payload()).encode()
        await send({"type": "http.response.start", "status": exc.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, self._error(declared.decode()))
            return
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._error(f"more than {self.limit}")
            return message

        async def tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge as exc:
            if not started:
                await self._refuse(send, exc)
