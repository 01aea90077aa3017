"""A real stmae-serve server on 127.0.0.1 (a free port), uvicorn in a thread, over the
small-preset test checkpoint on the CPU; tiny 48x64 synthetic clips written as PNG frames."""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.config import SessionConfig
from runtime.io.mask_io import write_mask
from stmae import generate_clip

from ..conftest import write_frames

pytest.importorskip("fastapi", reason="stmae-serve needs fastapi (pip install -e .)")


def png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Running:
    url: str
    hub: object
    metrics: object
    server: object


@pytest.fixture(scope="session")
def serve_backend(small_checkpoint):
    from runtime.backends.factory import create_backend

    return create_backend("torch", checkpoint=small_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def session_config() -> SessionConfig:
    return SessionConfig(size=-1)


@contextmanager
def http_front(hub, metrics=None, **uvicorn_options):
    """The FastAPI app over ``hub`` (any hub: runtime.serve.hub_api.ServingHub), uvicorn in
    a thread on a free loopback port; yields (url, server)."""
    import uvicorn

    from runtime.serve.app import create_app
    from runtime.serve.server import DrainingServer, bind

    sock = bind("127.0.0.1", 0)
    app = create_app(hub) if metrics is None else create_app(hub, metrics)
    server = DrainingServer(uvicorn.Config(app, log_level="warning", lifespan="off", **uvicorn_options), hub)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture()
def serve(serve_backend, session_config):
    """serve(**ServeConfig fields) -> a context manager yielding a :class:`Running`."""

    @contextmanager
    def start(**fields):
        from runtime.serve.config import ServeConfig
        from runtime.serve.hub import SessionHub
        from runtime.serve.metrics import ServeMetrics

        config = ServeConfig(**{"port": 0, **fields})
        metrics = ServeMetrics("cpu")
        hub = SessionHub(serve_backend, session_config, config, metrics, {"name": "small.pth"}).start()
        try:
            with http_front(hub, metrics, ws_max_size=config.max_request_bytes + (1 << 20)) as (url, server):
                yield Running(url, hub, metrics, server)
        finally:
            hub.stop()

    with torch.inference_mode(False):
        yield start


@pytest.fixture(scope="session")
def clips():
    """Two 6-frame 48x64 synthetic clips (2 objects each), different content."""
    return [generate_clip(frames=6, height=48, width=64, objects=2, seed=seed) for seed in (3, 8)]


def clip_on_disk(tmp_path, clip, name: str):
    frames_dir = tmp_path / name / "frames"
    write_frames(frames_dir, clip.frames, ".png")
    mask = tmp_path / name / "first.png"
    write_mask(mask, clip.masks[0])
    return frames_dir, mask


def offline_masks(checkpoint, frames_dir, mask, out) -> list[np.ndarray]:
    """stmae-segment's masks of a clip (its command, in this process), in frame order."""
    from runtime.cli import segment_main
    from runtime.io.mask_io import existing_masks, read_mask

    status = segment_main(["--checkpoint", str(checkpoint), "--backend", "torch", "--device", "cpu", "--size", "-1",
                           "--input", str(frames_dir), "--mask", str(mask), "--out", str(out), "--quiet"])
    assert status == 0
    return [read_mask(path)[0] for path in existing_masks(out)]
