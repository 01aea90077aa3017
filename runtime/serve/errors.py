"""The refusals of the service: an HTTP status, a short code and a one-line message.

A :class:`ServeError` never ends a session: the request (or the one frame) is refused and
the session goes on.
"""

from __future__ import annotations


class ServeError(Exception):
    """status: HTTP status (400 bad input, 401 token, 404 unknown, 409 closed, 413 too
    large, 429 queue full or too many sessions, 503 draining, 504 timeout); code: short
    machine-readable code; message: one line, what is wrong and how to fix it;
    retry_after: seconds (a Retry-After header), or None."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after

    def payload(self) -> dict:
        """``{"error": {"code": ..., "message": ...}}``, the JSON body of the refusal."""
        return {"error": {"code": self.code, "message": self.message}}


def bad_input(message: str) -> ServeError:
    return ServeError(400, "bad_input", message)


def too_large(message: str) -> ServeError:
    return ServeError(413, "too_large", message)
