"""Overlay videos that browsers play: H.264 in MP4 (odd sizes padded, never cut, the
original size recorded) and VP9 in WebM at exactly the frame's size."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.io.overlay import OverlayWriter, blend, probe_video


def _frames(n: int, h: int, w: int):
    rng = np.random.default_rng(0)
    frames = [np.full((h, w, 3), 40 + 20 * i, np.uint8) for i in range(n)]
    labels = [np.zeros((h, w), np.uint8) for _ in range(n)]
    for lab in labels:
        lab[h // 4: h // 2, w // 4: w // 2] = 1
    return frames, labels, rng


@pytest.mark.parametrize("suffix, codec, coded", [(".mp4", "h264", (22, 18)), (".webm", "vp9", (21, 17))])
def test_overlay_is_a_browser_codec_and_keeps_every_pixel(tmp_path, suffix, codec, coded):
    import av

    frames, labels, _ = _frames(6, 17, 21)
    path = tmp_path / f"o{suffix}"
    with OverlayWriter(path, 10.0, (17, 21)) as writer:
        for frame, lab in zip(frames, labels):
            writer.add(frame, lab)
    info = probe_video(path)
    assert (info["codec"], info["width"], info["height"], info["frames"]) == (codec, *coded, 6)
    assert info["original_size"] == (21, 17)
    with av.open(str(path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    # the frame's last column and row are in the video (an odd size is padded, not cut)
    want = blend(frames[0], labels[0]).astype(np.int16)
    assert np.abs(first[:17, :21].astype(np.int16) - want).mean() < 8


def test_overlay_refuses_types_browsers_do_not_play(tmp_path):
    for name in ("o.avi", "o.mkv", "o.gif", "o"):
        with pytest.raises(InputError, match="use .mp4 \\(H.264\\) or .webm \\(VP9\\)"):
            OverlayWriter(tmp_path / name, 10.0, (16, 16))
    assert list(tmp_path.iterdir()) == []


def test_overlay_of_another_size_is_refused_and_leaves_no_file(tmp_path):
    with pytest.raises(InputError, match="frame of size 8x8 in a video of 16x16"):
        with OverlayWriter(tmp_path / "o.mp4", 10.0, (16, 16)) as writer:
            writer.add(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []
