"""What the web layer (:mod:`runtime.serve.app`) and the server (:mod:`runtime.serve.server`)
call on a hub: :class:`ServingHub`. Two classes answer it with the same calls: the local
:class:`runtime.serve.hub.SessionHub` (one engine in this process) and
:class:`runtime.serve.ray_router.RayHub` (``stmae-serve --ray``: sessions pinned to engine
replicas on Ray Serve). tests/runtime/serve/test_ray_serve.py checks that every ``hub.X``
the app uses is here and on both.
"""

from __future__ import annotations

from typing import Callable, Protocol


class ServingHub(Protocol):
    """config: :class:`runtime.serve.config.ServeConfig`; session_config: the sessions'
    :class:`runtime.config.SessionConfig`; model_info: what ``/v1/info`` says of the model;
    observer: the metrics (``dropped(count, reason)`` ...); ready / draining / failure: what
    ``/readyz`` reports. Frames are the uploaded bytes (JPEG/PNG); outcomes are
    :class:`runtime.serve.hub.FrameOutcome` (``result_png`` gives the label map PNG)."""

    config: object
    session_config: object
    model_info: dict
    observer: object
    draining: bool
    failure: BaseException | None

    @property
    def ready(self) -> bool: ...

    def open_encoded(self, frame: bytes, mask: bytes) -> dict: ...

    def push_encoded(self, sid: str, frame: bytes, mask: bytes | None = None) -> int: ...

    def wait_result(self, sid: str, index: int, timeout: float): ...

    def result_png(self, sid: str, outcome) -> bytes: ...

    def close_session(self, sid: str, reason: str = "closed by the client") -> dict: ...

    def touch(self, sid: str) -> None: ...

    def add_listener(self, sid: str, listener: Callable, consume: bool = True) -> list: ...

    def remove_listener(self, sid: str, listener: Callable) -> None: ...

    def begin_drain(self) -> None: ...

    def wait_drained(self, timeout: float) -> bool: ...

    def stop(self) -> None: ...
