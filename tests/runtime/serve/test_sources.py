"""Server-side sources, on loopback: the tests serve an MJPEG stream over HTTP on 127.0.0.1
(the live tests' server); the operator's allow-list; snapshot -> session -> subscribers;
real-time drops counted; closing the session, or the server, stops the capture."""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect

from runtime.serve.config import ServeConfig
from stmae import generate_clip

from ..live.conftest import mjpeg_server
from .conftest import png

_THREADS = ("stmae-capture", "stmae-serve-source")


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and "\n" not in body["message"]
    return body["message"]


def _capture_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(_THREADS) and t.is_alive()]


def _no_capture_threads(timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _capture_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _capture_threads()


@pytest.fixture(scope="module")
def clip():
    return generate_clip(frames=30, height=48, width=64, objects=2, seed=5)


def test_sources_are_refused_unless_the_operator_allows_their_prefix(serve, capsys):
    from runtime.serve.cli import main

    with pytest.raises(ValueError, match="allowed_sources 'file:///etc/' is not a source prefix"):
        ServeConfig(allowed_sources=("file:///etc/",))
    assert main(["--allow-source", "file:///etc/", "--checkpoint", "unused.pth"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stmae-serve: error: --allow-source 'file:///etc/' is not")
    with serve() as running:  # no --allow-source: every source is refused, saying how to allow one
        message = _error(httpx.post(f"{running.url}/v1/sources", json={"url": "rtsp://camera1.local/live"}),
                         403, "source_not_allowed")
        assert "--allow-source PREFIX" in message
    with serve(allowed_sources=("rtsp://camera1.local/",)) as running:
        for url in ("rtsp://camera1.local.evil.example/live", "http://127.0.0.1:1/x", "/dev/video0"):
            message = _error(httpx.post(f"{running.url}/v1/sources", json={"url": url}), 403, "source_not_allowed")
            assert url in message and "--allow-source" in message
        _error(httpx.post(f"{running.url}/v1/sources", json={}), 400, "bad_input")


def _open_session(url: str, stream: str, clip) -> tuple[str, str, int]:
    """Open the source ``stream`` on the server at ``url``, take a snapshot, open a session
    on it with the clip's mask of that frame: (source_id, session_id, the snapshot's index)."""
    opened = httpx.post(f"{url}/v1/sources", json={"url": stream}, timeout=30)
    assert opened.status_code == 201, opened.text
    source = opened.json()
    assert (source["width"], source["height"]) == (64, 48)
    shot = httpx.get(f"{url}/v1/sources/{source['source_id']}/snapshot", timeout=30)
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/jpeg"
    index = int(shot.headers["X-Frame-Index"])
    assert Image.open(io.BytesIO(shot.content)).size == (64, 48)
    session = httpx.post(f"{url}/v1/sources/{source['source_id']}/session", timeout=30,
                         files={"mask": ("mask.png", png(clip.masks[index]))}, data={"frame_index": str(index)})
    assert session.status_code == 201, session.text
    return source["source_id"], session.json()["session_id"], index


def test_a_source_feeds_a_session_in_real_time_and_subscribers_get_its_masks(serve, clip):
    # frame 0 at once, a pause (the client takes a snapshot and opens the session), a burst
    # far faster than the engine (frames must be dropped), then a slower tail
    delays = [0.0, 2.0] + [0.002] * 20 + [0.25] * 8
    with mjpeg_server(clip.frames, delays) as stream, serve(allowed_sources=("http://127.0.0.1:",)) as running:
        source_id, sid, index = _open_session(running.url, stream, clip)
        assert index == 0
        labels, closed = [], None
        with connect(running.url.replace("http", "ws") + f"/v1/sessions/{sid}/subscribe") as ws:
            while closed is None:
                message = json.loads(ws.recv(timeout=30))
                if message["type"] == "closed":
                    closed = message
                    break
                assert message["type"] == "result", message
                labels.append(np.asarray(Image.open(io.BytesIO(ws.recv(timeout=30)))))
        assert "the source ended" in closed["reason"]
        assert len(labels) >= 2 and all(mask.shape == (48, 64) for mask in labels)
        assert any((mask > 0).any() for mask in labels)
        status = httpx.get(f"{running.url}/v1/sources/{source_id}", timeout=10).json()
        assert status["closed"].startswith("the source ended") and status["session_id"] == sid
        assert status["dropped"] > 0, status  # the burst outran the engine: the oldest frames were dropped
        assert status["segmented"] - 1 + status["dropped"] <= status["received"] == len(clip.frames)
        dropped = running.metrics.registry.get_sample_value("stmae_serve_dropped_frames_total", {"reason": "source"})
        assert dropped == status["dropped"]
    assert _no_capture_threads()


def test_closing_the_session_or_the_server_stops_the_capture(serve, clip):
    frames = np.concatenate([clip.frames] * 10)  # 300 frames, 15 s: longer than the test
    with mjpeg_server(frames, [0.05] * len(frames)) as stream, \
            serve(allowed_sources=("http://127.0.0.1:",)) as running:
        source_id, sid, index = _open_session(running.url, stream, clip)
        assert len(_capture_threads()) == 2
        mask = {"mask": ("mask.png", png(clip.masks[0]))}
        _error(httpx.post(f"{running.url}/v1/sources/{source_id}/session", files=mask,
                          data={"frame_index": str(index)}, timeout=10), 409, "source_busy")
        closed = httpx.delete(f"{running.url}/v1/sessions/{sid}", timeout=10)
        assert closed.status_code == 200, closed.text
        assert _no_capture_threads()
        status = httpx.get(f"{running.url}/v1/sources/{source_id}", timeout=10).json()
        assert status["closed"].startswith("its session was closed")
        _error(httpx.get(f"{running.url}/v1/sources/{source_id}/snapshot", timeout=10), 409, "source_closed")
        # a source without a session, left open: the server's stop closes it
        opened = httpx.post(f"{running.url}/v1/sources", json={"url": stream}, timeout=30)
        assert opened.status_code == 201 and len(_capture_threads()) == 2
        session = f"{running.url}/v1/sources/{opened.json()['source_id']}/session"
        _error(httpx.post(session, files=mask, data={"frame_index": "first"}, timeout=10), 400, "bad_input")
        _error(httpx.post(session, files=mask, data={"frame_index": "0"}, timeout=10), 409, "snapshot_gone")
    assert _no_capture_threads()
