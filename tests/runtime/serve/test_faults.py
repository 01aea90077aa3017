"""Every refusal of stmae-serve, each against a real server on loopback: the request is
refused with a JSON error and the session goes on."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from runtime.serve.client import ServeClient, ServeClientError

from .conftest import png

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and "\n" not in body["message"]
    return body["message"]


def _open(client, clip) -> str:
    return client.open_session(png(clip.frames[0]), png(clip.masks[0]))["session_id"]


def test_refusals_leave_the_session_alive(serve, clips):
    clip = clips[0]
    with serve(token=TOKEN, queue_depth=2, max_request_bytes=60_000, max_pixels=10_000) as running, \
            ServeClient(running.url, TOKEN) as client:
        url = running.url
        sid = _open(client, clip)
        frames = f"{url}/v1/sessions/{sid}/frames"
        # no token, a wrong token: 401 (and the comparison is the constant-time one)
        _error(httpx.post(frames, content=png(clip.frames[1])), 401, "unauthorized")
        _error(httpx.post(frames, content=png(clip.frames[1]), headers={"Authorization": "Bearer nope"}),
               401, "unauthorized")
        _error(httpx.get(f"{url}/metrics"), 401, "unauthorized")
        # malformed frames: 400, nothing queued
        message = _error(httpx.post(frames, content=b"not an image at all", headers=AUTH), 400, "bad_input")
        assert "cannot be read as an image" in message
        _error(httpx.post(frames, content=png(clip.frames[1][:40]), headers=AUTH), 400, "bad_input")  # other size
        _error(httpx.post(frames, content=b"", headers=AUTH), 400, "bad_input")
        # oversized: a body over --max-request-bytes (413 from its Content-Length, and
        # chunked without one), a frame over --max-pixels (413 from its header)
        _error(httpx.post(frames, content=b"\0" * 70_000, headers=AUTH), 413, "too_large")
        _error(httpx.post(frames, content=iter([b"\0" * 40_000] * 2), headers=AUTH), 413, "too_large")
        _error(httpx.post(frames, content=png(np.zeros((200, 200, 3), np.uint8)), headers=AUTH), 413, "too_large")
        # unknown session: 404
        _error(httpx.post(f"{url}/v1/sessions/nope/frames", content=png(clip.frames[1]), headers=AUTH),
               404, "unknown_session")
        # queue full: frame 0 not fetched + frame 1 = 2 in flight (--queue-depth 2): 429
        assert client.push(sid, png(clip.frames[1])) == 1
        response = httpx.post(frames, content=png(clip.frames[2]), headers=AUTH)
        _error(response, 429, "queue_full")
        assert "Retry-After" in response.headers
        # the session survived all of it: frames 0, 1, then 2 in order
        assert client.result(sid, 0).frame_index == 0
        assert client.result(sid, 1).frame_index == 1
        assert client.push(sid, png(clip.frames[2])) == 2
        assert client.result(sid, 2).labels.shape == (48, 64)
        metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
        assert 'stmae_serve_dropped_frames_total{reason="queue_full"} 1.0' in metrics
        assert 'stmae_serve_dropped_frames_total{reason="bad_input"} 3.0' in metrics
        assert 'stmae_serve_dropped_frames_total{reason="too_large"} 1.0' in metrics


def test_too_many_sessions_and_websocket_token(serve, clips):
    from websockets.sync.client import connect

    with serve(token=TOKEN, max_sessions=1) as running, ServeClient(running.url, TOKEN) as client:
        sid = _open(client, clips[0])
        with pytest.raises(ServeClientError) as refused:
            _open(client, clips[1])
        assert refused.value.status == 429 and refused.value.code == "too_many_sessions"
        ws_url = running.url.replace("http", "ws") + f"/v1/sessions/{sid}/stream"
        with connect(ws_url) as ws:  # a browser's way: the token as the first message; a wrong one
            ws.send(json.dumps({"type": "auth", "token": "wrong"}))
            assert json.loads(ws.recv(timeout=10))["code"] == "unauthorized"
            with pytest.raises(Exception):
                ws.recv(timeout=10)
            assert ws.close_code == 4401
        with connect(ws_url) as ws:  # the right one: frame 0's result comes first
            ws.send(json.dumps({"type": "auth", "token": TOKEN}))
            meta = json.loads(ws.recv(timeout=10))
            assert meta["type"] == "result" and meta["frame_index"] == 0
            assert isinstance(ws.recv(timeout=10), bytes)
            ws.send(b"garbage")  # a malformed frame on the stream: an error message, the stream goes on
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and error["code"] == "bad_input"
            ws.send(png(clips[0].frames[1]))
            assert json.loads(ws.recv(timeout=30))["frame_index"] == 1


def test_disconnect_mid_stream_frees_the_lane_and_spares_the_others(serve, clips):
    with serve(token=TOKEN) as running, ServeClient(running.url, TOKEN) as client:
        gone, stays = _open(client, clips[0]), _open(client, clips[1])
        stream = client.stream(gone)
        stream.send(png(clips[0].frames[1]))
        assert stream.receive().frame_index == 0
        stream.close()  # the client goes away without closing the session
        deadline = time.monotonic() + 20
        while gone in running.hub.session_ids() or running.hub.lanes_in_use() > 1:
            assert time.monotonic() < deadline, "the disconnected session kept its lane"
            time.sleep(0.05)
        with pytest.raises(ServeClientError) as closed:
            client.push(gone, png(clips[0].frames[2]))
        assert closed.value.status == 409 and "disconnected" in closed.value.message
        # the other session goes on
        assert client.result(stays, 0).frame_index == 0
        assert client.push(stays, png(clips[1].frames[1])) == 1
        assert client.result(stays, 1).labels.shape == (48, 64)
        assert running.hub.lanes_in_use() == 1


def test_idle_session_times_out_and_frees_its_lane(serve, clips):
    with serve(token=TOKEN, idle_timeout_s=0.5) as running, ServeClient(running.url, TOKEN) as client:
        sid = _open(client, clips[0])
        assert client.result(sid, 0).frame_index == 0
        deadline = time.monotonic() + 20
        while sid in running.hub.session_ids() or running.hub.lanes_in_use():
            assert time.monotonic() < deadline, "the idle session was not closed"
            time.sleep(0.05)
        with pytest.raises(ServeClientError) as closed:
            client.push(sid, png(clips[0].frames[1]))
        assert closed.value.status == 409 and "idle" in closed.value.message


def test_health_readiness_openapi_and_metrics(serve):
    with serve(token=TOKEN) as running:
        url = running.url
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").json() == {"ready": True}
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        for path in ("/v1/info", "/v1/sessions", "/v1/sessions/{sid}/frames", "/v1/sessions/{sid}/masks/{index}",
                     "/v1/sessions/{sid}", "/v1/grabcut", "/healthz", "/readyz", "/metrics"):
            assert path in paths, path
        info = httpx.get(f"{url}/v1/info", headers=AUTH).json()
        assert info["limits"]["queue_depth"] == 8 and info["model"]["name"] == "small.pth"
        text = httpx.get(f"{url}/metrics", headers=AUTH).text
        for name in ("stmae_serve_frames_total", "stmae_serve_step_seconds_bucket", "stmae_serve_batch_size_bucket",
                     "stmae_serve_queue_depth", "stmae_serve_active_sessions", "stmae_serve_device_memory_bytes"):
            assert name in text, name
        assert "access-control-allow-origin" not in httpx.options(
            f"{url}/v1/info", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}).headers
        running.hub.begin_drain()  # draining: not ready, no new frames
        assert httpx.get(f"{url}/readyz").status_code == 503


def test_grabcut_route(serve):
    from runtime.serve.client import labels_from_png

    frame = np.full((48, 64, 3), 30, np.uint8)
    frame[12:36, 20:44] = (220, 40, 40)  # a red square on a dark background
    with serve(token=TOKEN) as running:
        url = f"{running.url}/v1/grabcut"
        response = httpx.post(url, headers=AUTH, files={"frame": ("f.png", png(frame))}, data={"box": "14,6,50,42"})
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        proposal = labels_from_png(response.content)
        assert proposal.shape == (48, 64) and proposal[20:28, 28:36].all() and not proposal[:4].any()
        _error(httpx.post(url, headers=AUTH, files={"frame": ("f.png", png(frame))}, data={"box": "1,2,3"}),
               400, "bad_input")
        _error(httpx.post(url, files={"frame": ("f.png", png(frame))}, data={"box": "14,6,50,42"}), 401, "unauthorized")


def test_slow_consumer_is_bounded_and_spares_the_others(serve, clips, tmp_path, small_checkpoint):
    """A stream client that keeps sending frames and never reads its results: at most
    queue_depth of its frames are in flight (the rest get queue_full), another session
    streaming meanwhile gets all its masks equal to stmae-segment's, and the slow session's
    lane is freed when it disconnects."""
    import threading

    from websockets.sync.client import connect

    from .conftest import clip_on_disk, offline_masks

    slow_clip, clip = clips
    frames_dir, mask = clip_on_disk(tmp_path, clip, "other")
    expected = offline_masks(small_checkpoint, frames_dir, mask, tmp_path / "offline")
    depth = 2
    with serve(token=TOKEN, queue_depth=depth) as running, ServeClient(running.url, TOKEN) as client:
        slow = _open(client, slow_clip)
        ws = connect(running.url.replace("http", "ws") + f"/v1/sessions/{slow}/stream", additional_headers=AUTH,
                     max_queue=1).__enter__()
        frames = [png(f) for f in slow_clip.frames[1:]]
        stop, sent = threading.Event(), [0]

        def flood() -> None:  # never reads
            try:
                while not stop.is_set() and sent[0] < 400:
                    ws.send(frames[sent[0] % len(frames)])
                    sent[0] += 1
            except Exception:  # the socket closed under it
                pass

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        other = _open(client, clip)
        with client.stream(other) as stream:
            got = [stream.receive()]
            for t in range(1, 6):  # within its own queue depth
                stream.send(png(clip.frames[t]))
                got.append(stream.receive())
            stream.finish()
        stop.set()
        flooder.join(timeout=30)
        assert [r.frame_index for r in got] == list(range(6))
        for t, result in enumerate(got):
            assert np.array_equal(result.labels, expected[t]), f"frame {t} of the other session differs from offline"
        # now read what the slow client was sent: a result for at most queue_depth frames at a
        # time, queue_full for the frames sent beyond that
        results, refused = 0, 0
        while True:
            try:
                message = ws.recv(timeout=5)
            except TimeoutError:
                break
            if isinstance(message, bytes):
                continue
            meta = json.loads(message)
            if meta["type"] == "result":
                results += 1
            elif meta["code"] == "queue_full":
                refused += 1
                assert "--queue-depth" in meta["message"]
        assert sent[0] >= 20 and refused > 0, (sent[0], results, refused)
        assert results + refused <= sent[0] + 1  # frame 0 + one answer per frame at most
        ws.close()
        deadline = time.monotonic() + 20
        while slow in running.hub.session_ids() or running.hub.lanes_in_use():
            assert time.monotonic() < deadline, "the slow consumer's session kept its lane"
            time.sleep(0.05)
