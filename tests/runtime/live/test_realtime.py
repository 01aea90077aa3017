"""Live streams on loopback: segmented as they arrive (the masks are those of the same
frames segmented offline), real-time mode drops frames when the network bursts after a
stall and the segmenter is slow, UDP MPEG-TS, and Ctrl-C ending the command cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime.backends.factory import create_backend
from runtime.config import SessionConfig
from runtime.live.realtime import LatestSlot, _END, segment_live
from runtime.live.source import StreamSource, is_live_input
from runtime.io.mask_io import read_mask, write_mask
from runtime.engine.session import VideoSession
from tests.runtime.conftest import default_sigint, subprocess_env

from .conftest import free_udp_port, mjpeg_server, send_mpegts_udp

CONFIG = SessionConfig(size=-1, mem_every=2)


@pytest.fixture(scope="module")
def backend(small_checkpoint):
    return create_backend("torch", checkpoint=small_checkpoint, device="cpu")


def test_live_inputs_are_recognised():
    for text in ("rtsp://cam/1", "rtmp://h/app", "http://h/x.mjpg", "https://h/s.m3u8", "udp://0.0.0.0:5000",
                 "/dev/video0"):
        assert is_live_input(text), text
    for text in ("video.mp4", "frames/", "file:///x.mp4", "/dev/sda", None):
        assert not is_live_input(text), text


def test_latest_slot_keeps_the_newest_frame_and_counts_drops():
    slot = LatestSlot()
    for item in ("f0", "f1", "f2"):
        slot.put(item)
    assert slot.get() == "f2" and slot.dropped == 2
    slot.put("f3")
    slot.put(_END)
    assert slot.get() == "f3" and slot.get() is _END and slot.get() is _END


def test_mjpeg_stream_is_segmented_frame_by_frame(stream_clip, backend, tmp_path):
    frames = stream_clip.frames[:12]
    seen = []
    with mjpeg_server(frames, [0.02] * len(frames)) as url:
        summary = segment_live(StreamSource(url, timeout=5), backend, stream_clip.masks[0], config=CONFIG,
                               out_dir=tmp_path, realtime=False, on_frame=seen.append)
    assert (summary.received, summary.segmented, summary.dropped) == (12, 12, 0)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{i:06d}.png" for i in range(12)]
    assert 0 < summary.percentile_ms(50) <= summary.percentile_ms(99) < 60_000
    # The masks are those of the same decoded frames segmented offline.
    session = VideoSession(backend, CONFIG)
    for i, item in enumerate(seen):
        expected = session.step(item.frame, stream_clip.masks[0] if i == 0 else None).labels
        np.testing.assert_array_equal(read_mask(tmp_path / f"{item.index:06d}.png")[0], expected)
    assert np.abs(seen[5].frame.astype(int) - frames[5]).mean() < 8  # the frames came through the stream


def _burst(frames: int) -> list[float]:
    """A network that stalls, then delivers what it held back at once."""
    return [0.03] * 3 + [0.6] + [0.0] * (frames - 4)


def test_realtime_mode_drops_frames_when_the_network_falls_behind(stream_clip, backend, tmp_path):
    frames = stream_clip.frames[:24]
    slow = lambda _item: time.sleep(0.03)  # noqa: E731 - a segmenter slower than the burst
    with mjpeg_server(frames, _burst(len(frames))) as url:
        live = segment_live(StreamSource(url, timeout=5), backend, stream_clip.masks[0], config=CONFIG,
                            out_dir=tmp_path / "rt", realtime=True, on_frame=slow)
    assert live.received == 24 and live.dropped > 0
    assert live.segmented + live.dropped == live.received
    written = sorted(int(p.stem) for p in (tmp_path / "rt").glob("*.png"))
    assert len(written) == live.segmented and written[-1] == 23  # gaps where frames were dropped
    with mjpeg_server(frames, _burst(len(frames))) as url:
        every = segment_live(StreamSource(url, timeout=5), backend, stream_clip.masks[0], config=CONFIG,
                             out_dir=tmp_path / "all", realtime=False, on_frame=slow)
    assert (every.received, every.segmented, every.dropped) == (24, 24, 0)


def test_udp_mpegts_stream_is_segmented(stream_clip, backend, tmp_path):
    port = free_udp_port()
    sender = send_mpegts_udp(port, stream_clip.frames[:30])
    summary = segment_live(StreamSource(f"udp://127.0.0.1:{port}", timeout=5), backend, stream_clip.masks[0],
                           config=CONFIG, out_dir=tmp_path, realtime=True, max_frames=5)
    sender.join(10)
    assert summary.segmented == 5
    assert len(list(tmp_path.glob("*.png"))) == 5


def test_ctrl_c_ends_the_live_command_cleanly(stream_clip, small_checkpoint, tmp_path):
    first = tmp_path / "first.png"
    write_mask(first, stream_clip.masks[0])
    out, overlay = tmp_path / "masks", tmp_path / "overlay.webm"
    frames = np.concatenate([stream_clip.frames] * 5)
    with mjpeg_server(frames, [0.04] * len(frames)) as url:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from runtime.cli import segment_main; sys.exit(segment_main())",
             "--input", url, "--mask", str(first), "--out", str(out), "--overlay", str(overlay), "--realtime",
             "--checkpoint", str(small_checkpoint), "--device", "cpu", "--size", "-1", "--mem-every", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
            preexec_fn=default_sigint,
        )
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.png"))) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by Ctrl-C" in stdout
    stats = json.loads((out / "live_stats.json").read_text())
    assert stats["interrupted"] and stats["segmented"] >= 4
    masks = sorted(out.glob("*.png"))
    assert len(masks) == stats["segmented"]
    for path in masks:
        assert read_mask(path)[0].shape == (48, 64)
    import cv2

    video = cv2.VideoCapture(str(overlay))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == stats["segmented"]
    video.release()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def _live_main(capsys, *args):
    from runtime.cli import segment_main

    code = segment_main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def test_live_bad_input_is_one_line(stream_clip, small_checkpoint, tmp_path, capsys):
    first = tmp_path / "first.png"
    write_mask(first, stream_clip.masks[0])
    common = ["--checkpoint", small_checkpoint, "--device", "cpu", "--out", tmp_path / "o"]
    port = free_udp_port()  # nothing listens on this TCP port either, almost surely
    cases = [
        (["--input", f"http://127.0.0.1:{port}/x.mjpg"], "a live source needs --mask FIRST.png"),
        (["--input", f"http://127.0.0.1:{port}/x.mjpg", "--mask", first, "--stream-timeout", "2"],
         f"cannot open the stream http://127.0.0.1:{port}/x.mjpg"),
        (["--input", "/dev/video99", "--mask", first], "cannot open /dev/video99: no such camera"),
        (["--camera", "0", "--input", "rtsp://h/s", "--mask", first], "give --input URL or --camera N, not both"),
        (["--input", "udp://127.0.0.1:1", "--mask", first, "--overlay", tmp_path / "o.gif"], "use .mp4 (H.264) or .webm (VP9)"),
    ]
    for extra, message in cases:
        code, err = _live_main(capsys, *extra, *common)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (extra, err)
