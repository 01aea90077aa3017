"""stmae-serve end to end on loopback: a real server (uvicorn in a thread) over the small
test checkpoint; sessions equal offline stmae-segment, frames of several sessions are
batched, and every refusal leaves the session alive."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from runtime.serve.client import ServeClient, ServeClientError

from .conftest import clip_on_disk, offline_masks, png

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def offline(tmp_path_factory, small_checkpoint, clips):
    """Per clip: (frames folder, first mask, stmae-segment's masks)."""
    root = tmp_path_factory.mktemp("offline")
    out = []
    for i, clip in enumerate(clips):
        frames_dir, mask = clip_on_disk(root, clip, f"clip{i}")
        out.append((frames_dir, mask, offline_masks(small_checkpoint, frames_dir, mask, root / f"out{i}")))
    return out


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split("}")[0].count("=") == 0:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


def test_session_alone_equals_offline_exactly(serve, clips, offline):
    """One session through the service (upload, queue, step, PNG, fetch) is stmae-segment."""
    clip, (_, _, expected) = clips[0], offline[0]
    with serve(token=TOKEN) as running, ServeClient(running.url, TOKEN) as client:
        sid = client.open_session(png(clip.frames[0]), png(clip.masks[0]))["session_id"]
        got = [client.result(sid, 0).labels]
        for t in range(1, 6):
            assert client.push(sid, png(clip.frames[t])) == t
            got.append(client.result(sid, t).labels)
    for t in range(6):
        assert np.array_equal(got[t], expected[t]), f"frame {t} differs from stmae-segment"


def test_sessions_are_batched_and_equal_offline(serve, clips, offline):
    """Two sessions' frames go through one engine step; their masks are exactly
    stmae-segment's (on the CPU the engine runs the networks lane by lane:
    runtime.engine.device_step.DeviceStep.lane_by_lane)."""
    with serve(token=TOKEN, max_wait_ms=200.0, queue_depth=8) as running, \
            ServeClient(running.url, TOKEN) as client:
        sessions = [client.open_session(png(clip.frames[0]), png(clip.masks[0])) for clip in clips]
        for t in range(1, 6):  # both sessions' frames wait together: one step takes both
            for clip, session in zip(clips, sessions):
                assert client.push(session["session_id"], png(clip.frames[t])) == t
        got = [[client.result(s["session_id"], t).labels for t in range(6)] for s in sessions]
        metrics = httpx.get(running.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        stats = client.close_session(sessions[0]["session_id"])
    for labels, (_, _, expected) in zip(got, offline):
        for t in range(6):
            assert np.array_equal(labels[t], expected[t]), f"frame {t}: {(labels[t] != expected[t]).sum()} pixels differ"
    count = _metric(metrics, "stmae_serve_batch_size_count")
    total = _metric(metrics, "stmae_serve_batch_size_sum")
    assert total == _metric(metrics, "stmae_serve_frames_total") == 12
    assert total > count, "no engine step took the frames of two sessions"
    assert running.hub.steps < running.hub.frames
    assert stats["frames"] == 6
