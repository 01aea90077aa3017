"""The WebSocket stream's messages: a refused frame says which of the client's frames it was
(``sequence``), results carry the same ``sequence``; ``{"type":"ping"}`` is answered with
``{"type":"pong"}`` and keeps an open stream's session from the idle timeout."""

from __future__ import annotations

import json
import time

import httpx
from websockets.sync.client import connect

from runtime.serve.client import ServeClient

from .conftest import png


def _messages(ws, results: int, errors: int, timeout: float = 30.0) -> tuple[list[dict], list[dict]]:
    """The text messages of ``ws`` until ``results`` results and ``errors`` errors came."""
    got_results, got_errors = [], []
    deadline = time.monotonic() + timeout
    while len(got_results) < results or len(got_errors) < errors:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, bytes):
            continue
        body = json.loads(message)
        (got_results if body["type"] == "result" else got_errors).append(body)
    return got_results, got_errors


def test_a_refused_frame_and_each_result_carry_the_frames_sequence_on_the_socket(serve, clips):
    clip = clips[0]
    with serve() as running, ServeClient(running.url) as client:
        sid = client.open_session(png(clip.frames[0]), png(clip.masks[0]))["session_id"]
        with connect(running.url.replace("http", "ws") + f"/v1/sessions/{sid}/stream") as ws:
            ws.send(png(clip.frames[1]))                    # sequence 0
            ws.send(b"not an image")                         # sequence 1: refused
            ws.send(json.dumps({"type": "mask"}))            # a mask: not a frame, not counted
            ws.send(png(clip.masks[2]))
            ws.send(png(clip.frames[2]))                     # sequence 2
            results, errors = _messages(ws, results=3, errors=1)
            ws.send(json.dumps({"type": "close"}))
    assert [(r["frame_index"], r["sequence"]) for r in results] == [(0, None), (1, 0), (2, 2)]
    (error,) = errors
    assert error["code"] == "bad_input" and error["sequence"] == 1 and error["frame_index"] is None


def test_pings_keep_an_open_streams_session_from_the_idle_timeout(serve, clips):
    clip = clips[0]
    idle = 0.6
    with serve(idle_timeout_s=idle) as running, ServeClient(running.url) as client:
        kept = client.open_session(png(clip.frames[0]), png(clip.masks[0]))["session_id"]
        idle_one = client.open_session(png(clip.frames[0]), png(clip.masks[0]))["session_id"]
        with connect(running.url.replace("http", "ws") + f"/v1/sessions/{kept}/stream") as ws:
            assert _messages(ws, results=1, errors=0)[0][0]["frame_index"] == 0
            assert isinstance(ws.recv(timeout=10), bytes)  # its label map
            until = time.monotonic() + 4 * idle
            while time.monotonic() < until:  # paused: nothing but pings, each answered
                ws.send(json.dumps({"type": "ping"}))
                assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
                time.sleep(idle / 3)
            ws.send(png(clip.frames[1]))  # the session is still there
            (result,), _ = _messages(ws, results=1, errors=0)
            assert result["frame_index"] == 1
        # the other session, untouched all along, was closed by the idle timeout
        response = httpx.get(f"{running.url}/v1/sessions/{idle_one}/masks/0", timeout=10)
        assert response.status_code == 409 and "idle" in response.json()["error"]["message"]
