"""Run a server: the hub over a backend, the app over the hub, uvicorn run programmatically.

The socket is bound here (``port`` 0: a free one), so the startup line names the real URL.
SIGTERM (and a first Ctrl-C) drains: ``/readyz`` answers 503 and new sessions and frames
are refused (503) at once; the frames in flight are stepped and their results delivered
(or ``drain_timeout_s`` passes); then uvicorn closes the connections and the process exits
0. A second signal stops without waiting.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from dataclasses import replace
from typing import Callable

import uvicorn

from .app import create_app
from .config import ServeConfig
from .hub import SessionHub
from .metrics import ServeMetrics

_WS_SLACK = 1 << 20  # WebSocket messages a little over the limit still get a JSON refusal


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose SIGTERM/SIGINT drain the hub before uvicorn shuts down (and
    whose exit is not re-raised as the signal: a drained server exits 0)."""

    def __init__(self, config: uvicorn.Config, hub: SessionHub) -> None:
        super().__init__(config)
        self.hub = hub
        self.drained: bool | None = None
        self._drain_thread: threading.Thread | None = None

    def begin_drain(self) -> None:
        if self._drain_thread is not None:
            self.should_exit = self.force_exit = True  # a second signal: stop now
            return
        self.hub.begin_drain()
        self._drain_thread = threading.Thread(target=self._drain, name="stmae-serve-drain", daemon=True)
        self._drain_thread.start()

    def _drain(self) -> None:
        self.drained = self.hub.wait_drained(self.hub.config.drain_timeout_s)
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handlers = {sig: signal.signal(sig, lambda *_: self.begin_drain()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def serve(config: ServeConfig, make_backend: Callable[[], object], session_config,
          model_info: Callable[[], dict], announce: Callable[[str], None] = print,
          make_hub: Callable[[ServeMetrics], object] | None = None) -> int:
    """Load the model (``make_backend()``), bind, print the startup line, serve until a
    signal, drain, stop. ``model_info()``: what /v1/info says of the model (called once
    the backend is loaded). make_hub(metrics): instead of a local hub, the hub to serve
    (``--ray``: :class:`runtime.serve.ray_router.RayHub`; ``make_backend`` is then unused).
    Returns the exit status (0 after a drain)."""
    if make_hub is not None:
        metrics = ServeMetrics("cpu")  # the front process's memory; the replicas report steps and drops
        hub = make_hub(metrics)
        model_info = hub.model_info
    else:
        backend = make_backend()
        model_info = {**model_info(), "device": str(backend.device)}
        metrics = ServeMetrics(str(backend.device))
        hub = SessionHub(backend, session_config, config, metrics, model_info).start()
    try:
        sock = bind(config.host, config.port)
        port = sock.getsockname()[1]
        url = replace(config, port=port).url
        app = create_app(hub, metrics)
        server = DrainingServer(uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", ws_max_size=config.max_request_bytes + _WS_SLACK,
            timeout_graceful_shutdown=5, ws_ping_interval=20.0, ws_ping_timeout=20.0), hub)
        auth = ("a bearer token is required" if config.token is not None
                else "no token: bound to loopback only")
        announce(f"stmae-serve: serving {model_info.get('name', 'the model')} on {url} ({auth}); "
                 f"page {url}/, API {url}/docs")
        sys.stdout.flush()
        server.run(sockets=[sock])
    finally:
        hub.stop()
    if hub.failure is not None:
        print(f"stmae-serve: error: the scheduler failed: {type(hub.failure).__name__}: {hub.failure}",
              file=sys.stderr)
        return 1
    if server.drained is False:
        print(f"stmae-serve: warning: frames or results were still in flight after {config.drain_timeout_s:g} s "
              f"(--drain-timeout); they were dropped", file=sys.stderr)
    return 0
