"""Bearer tokens: a constant-time comparison (:func:`hmac.compare_digest`) of the
``Authorization: Bearer <token>`` header, or of a WebSocket's first ``auth`` message."""

from __future__ import annotations

import hmac

from .errors import ServeError


def token_matches(expected: str | None, given: str | None) -> bool:
    """True when no token is required, or ``given`` equals ``expected`` (constant time)."""
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None if absent)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def check_bearer(expected: str | None, header: str | None) -> None:
    """ServeError 401 unless the header carries the expected token."""
    if not token_matches(expected, bearer(header)):
        what = "no bearer token was given" if bearer(header) is None else "the bearer token is wrong"
        raise ServeError(401, "unauthorized", f"{what}: send the header 'Authorization: Bearer <token>' with the "
                         f"server's token (--token or STMAE_SERVE_TOKEN)")
