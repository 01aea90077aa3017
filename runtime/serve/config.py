"""The server's settings: :class:`ServeConfig` (frozen, validates itself) and the
loopback-only rule for servers without a token."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

LOOPBACK_NAMES = ("localhost",)
TOKEN_ENV = "STMAE_SERVE_TOKEN"
DEFAULT_MAX_SESSIONS = 16
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_MS = 5.0
DEFAULT_QUEUE_DEPTH = 8
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_DRAIN_TIMEOUT_S = 30.0
# what a --allow-source prefix may start with (runtime.live.source opens these)
SOURCE_PREFIX_STARTS = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "/dev/video")


def is_loopback(host: str) -> bool:
    """``host`` is this machine only: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _positive(name: str, value, kind=int) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok:
        raise ValueError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")


@dataclass(frozen=True)
class ServeConfig:
    """How one server runs.

    host, port: where it listens (port 0: a free port). token: the bearer token every
    ``/v1/*`` route and ``/metrics`` need (None: no token, and then ``host`` must be a
    loopback address). max_sessions: sessions open at once; max_batch: lanes stepped
    together at most; max_wait_ms: how long the scheduler waits for more sessions' frames
    after the first ready one; queue_depth: frames a session may have in flight (queued
    or unfetched results); max_request_bytes: the largest request body or WebSocket
    message; max_pixels: the largest frame (width x height); idle_timeout_s: a session
    without a request for this long is closed and frees its lane; drain_timeout_s: on
    SIGTERM, how long in-flight frames and unfetched results are waited for;
    cors_origins: origins allowed by CORS (empty: CORS off); allowed_sources: the prefixes
    a server-side source's URL must start with (each starts with one of
    :data:`SOURCE_PREFIX_STARTS`; empty: no source is allowed); png_level: zlib level of
    result PNGs.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    queue_depth: int = DEFAULT_QUEUE_DEPTH
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pixels: int = 0  # 0: STMAE_MAX_PIXELS (runtime.io.frames.max_pixels)
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    allowed_sources: tuple[str, ...] = field(default_factory=tuple)
    png_level: int = 1

    def __post_init__(self) -> None:
        from ..io.frames import max_pixels
        from ..io.mask_io import check_png_level

        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0 (a free port) .. 65535, got {self.port!r}")
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise ValueError("token must be a non-empty string (or no token at all)")
        if self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host} is reachable from other machines and no token is set: pass --token T (or set "
                f"{TOKEN_ENV}), or bind to 127.0.0.1"
            )
        for name in ("max_sessions", "max_batch", "queue_depth", "max_request_bytes"):
            _positive(name, getattr(self, name))
        for name in ("max_wait_ms",):
            if not isinstance(self.max_wait_ms, (int, float)) or isinstance(self.max_wait_ms, bool) or \
                    self.max_wait_ms < 0:
                raise ValueError(f"{name} must be a number >= 0, got {self.max_wait_ms!r}")
        for name in ("idle_timeout_s", "drain_timeout_s"):
            _positive(name, getattr(self, name), float)
        limit = max_pixels()
        if self.max_pixels == 0:
            object.__setattr__(self, "max_pixels", limit)
        _positive("max_pixels", self.max_pixels)
        if self.max_pixels > limit:
            raise ValueError(f"max_pixels {self.max_pixels} is above STMAE_MAX_PIXELS ({limit}); raise that too")
        check_png_level(self.png_level)
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        object.__setattr__(self, "allowed_sources", tuple(self.allowed_sources))
        for prefix in self.allowed_sources:
            if not isinstance(prefix, str) or not prefix.lower().startswith(SOURCE_PREFIX_STARTS) or \
                    any(c.isspace() or not c.isprintable() for c in prefix):
                raise ValueError(f"allowed_sources {prefix!r} is not a source prefix; give one starting with "
                                 f"{', '.join(SOURCE_PREFIX_STARTS)} (e.g. rtsp://camera1.local/)")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def limits(self) -> dict:
        """The limits a client may read (``GET /v1/info``)."""
        return {"max_sessions": self.max_sessions, "max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms,
                "max_pixels": self.max_pixels, "max_request_bytes": self.max_request_bytes,
                "queue_depth": self.queue_depth, "idle_timeout_s": self.idle_timeout_s}
