"""How a live run ends, on loopback streams: the reason (source ended, stalled, broke
mid-frame, size changed, --max-frames, Ctrl-C) is in the summary line and in
live_stats.json; a partial frame is never segmented; what was segmented before a stop is
kept (masks, overlay, statistics); received = segmented + dropped + still queued, always;
a refusal writes nothing."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from runtime.backends.factory import create_backend
from runtime.config import SessionConfig
from runtime.io.mask_io import write_mask
from runtime.io.overlay import probe_video
from runtime.live.realtime import segment_live
from runtime.live.source import StreamSource

from .conftest import mjpeg_server

CONFIG = SessionConfig(size=-1, mem_every=2)


@pytest.fixture(scope="module")
def backend(small_checkpoint):
    return create_backend("torch", checkpoint=small_checkpoint, device="cpu")


def _accounted(summary) -> None:
    assert summary.received == summary.segmented + summary.dropped + summary.queued, summary
    stats = summary.as_dict()
    assert stats["received"] == stats["segmented"] + stats["dropped"] + stats["queued"]
    assert (f"{summary.segmented} frames segmented of {summary.received} received ({summary.dropped} dropped, "
            f"{summary.queued} still queued at the end)") in summary.line()


def test_a_stream_cut_mid_frame_has_only_its_whole_frames_segmented(stream_clip, backend, tmp_path):
    frames = stream_clip.frames[:6]
    with mjpeg_server(frames, [0.02] * 6, cut_at=4) as url:
        summary = segment_live(StreamSource(url, timeout=5), backend, stream_clip.masks[0], config=CONFIG,
                               out_dir=tmp_path, realtime=False)
    assert summary.segmented == 4 and summary.received == 4  # frame 4 arrived half: never segmented
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{i:06d}.png" for i in range(4)]
    assert summary.end == "broke mid-frame" and summary.failed
    assert summary.as_dict()["end_reason"] == "broke mid-frame" and summary.damaged == 1
    assert "end: the stream broke mid-frame (the partial frame was not segmented)" in summary.line()
    _accounted(summary)


def test_a_frame_size_change_keeps_the_overlay_and_stats_of_the_frames_before(stream_clip, backend, tmp_path):
    frames = [*stream_clip.frames[:4], *(f[:40] for f in stream_clip.frames[4:7])]  # 64x48, then 64x40
    overlay = tmp_path / "overlay.mp4"
    with mjpeg_server(frames, [0.02] * len(frames)) as url:
        summary = segment_live(StreamSource(url, timeout=5), backend, stream_clip.masks[0], config=CONFIG,
                               out_dir=tmp_path / "masks", overlay=overlay, realtime=False)
    assert summary.segmented == 4 and summary.end == "size changed"
    assert summary.end_detail.startswith("the frame size changed from 64x48 to 64x40 at frame 4")
    assert len(list((tmp_path / "masks").glob("*.png"))) == 4
    assert probe_video(overlay)["frames"] == 4  # finished and moved into place, not discarded
    assert summary.warning().startswith("the live run ended early: the frame size changed")
    _accounted(summary)


def test_a_stall_past_the_timeout_ends_the_run_with_its_reason(stream_clip, backend, tmp_path):
    frames = stream_clip.frames[:5]
    with mjpeg_server(frames, [0.02, 0.02, 0.02, 30.0, 0.0]) as url:
        started = time.monotonic()
        summary = segment_live(StreamSource(url, timeout=1), backend, stream_clip.masks[0], config=CONFIG,
                               out_dir=tmp_path, realtime=True)
        assert time.monotonic() - started < 25  # not the 30 s the server holds back
    assert summary.segmented + summary.dropped == 3 and summary.end == "stalled"
    assert "end: the source stalled: no data for --stream-timeout 1 s" in summary.line()
    _accounted(summary)


def test_frames_still_queued_at_the_stop_are_counted(stream_clip, backend, tmp_path):
    """Every frame is kept (no drops); the segmenter is slower than the stream, so frames
    wait in the queue when --max-frames stops the run: they are received and counted."""
    frames = stream_clip.frames[:16]
    slow = lambda _item: time.sleep(0.2)  # noqa: E731
    with mjpeg_server(frames, [0.0] * len(frames)) as url:
        summary = segment_live(StreamSource(url, timeout=5), backend, stream_clip.masks[0], config=CONFIG,
                               out_dir=tmp_path, realtime=False, max_frames=3, on_frame=slow)
    assert summary.segmented == 3 and summary.dropped == 0 and summary.queued > 0
    assert summary.end == "max frames" and "end: --max-frames 3 reached" in summary.line() and not summary.failed
    _accounted(summary)


def test_a_source_that_ended_says_so(stream_clip, backend, tmp_path):
    with mjpeg_server(stream_clip.frames[:3], [0.02] * 3) as url:
        summary = segment_live(StreamSource(url, timeout=5), backend, stream_clip.masks[0], config=CONFIG,
                               out_dir=tmp_path, realtime=False)
    assert (summary.segmented, summary.end, summary.failed) == (3, "source ended", False)
    assert summary.as_dict()["end_reason"] == "source ended" and summary.warning() is None
    _accounted(summary)


# ---- the command line -----------------------------------------------------------------------
def _live(capsys, small_checkpoint, *args):
    from runtime.cli import segment_main

    capsys.readouterr()
    code = segment_main([str(a) for a in (*args, "--checkpoint", small_checkpoint, "--device", "cpu", "--size", -1,
                                          "--mem-every", 2, "--quiet")])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_cli_a_broken_stream_exits_1_with_its_reason_and_keeps_its_results(stream_clip, small_checkpoint, tmp_path,
                                                                           capsys):
    first = tmp_path / "first.png"
    write_mask(first, stream_clip.masks[0])
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    with mjpeg_server(stream_clip.frames[:6], [0.02] * 6, cut_at=5) as url:
        code, stdout, err = _live(capsys, small_checkpoint, "--input", url, "--mask", first, "--out", out,
                                  "--overlay", overlay)
    assert code == 1, err
    assert err == ("stmae-segment: warning: the live run ended early: the stream broke mid-frame (the partial frame "
                   "was not segmented); the masks, overlay and statistics of the 5 frames segmented before were kept")
    assert "end: the stream broke mid-frame" in stdout.splitlines()[-1]
    stats = json.loads((out / "live_stats.json").read_text())
    assert stats["end_reason"] == "broke mid-frame" and stats["segmented"] == 5
    assert stats["received"] == stats["segmented"] + stats["dropped"] + stats["queued"]
    assert len(list(out.glob("*.png"))) == 5 and probe_video(overlay)["frames"] == 5


def test_cli_refusals_write_nothing(stream_clip, small_checkpoint, tmp_path, capsys):
    """A mask of another size than the stream's frames, a stream that sends nothing and one
    nothing answers at are refused (exit 2, one line) with no --out and no record made."""
    wrong = tmp_path / "wrong.png"
    write_mask(wrong, np.pad(stream_clip.masks[0], ((0, 8), (0, 0))))  # 64x56, the stream is 64x48
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    with mjpeg_server(stream_clip.frames[:4], [0.02] * 4) as url:
        code, _, err = _live(capsys, small_checkpoint, "--input", url, "--mask", wrong, "--out", out,
                             "--overlay", overlay)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("stmae-segment: error: the mask is 64x56 but the stream's frames are 64x48")
    first = tmp_path / "first.png"
    write_mask(first, stream_clip.masks[0])
    with mjpeg_server(stream_clip.frames[:1], [30.0]) as url:  # answers, then sends nothing
        code, _, err = _live(capsys, small_checkpoint, "--input", url, "--mask", first, "--out", out,
                             "--stream-timeout", 1)
    assert code == 2 and len(err.splitlines()) == 1 and "stmae-segment: error: " in err
    assert not out.exists() and not overlay.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "wrong.png"]
