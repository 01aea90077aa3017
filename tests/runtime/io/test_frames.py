import numpy as np
import pytest
from PIL import Image

from runtime.errors import InputError
from runtime.io.frames import FrameFolder, VideoFile, open_frames
from stmae import generate_clip


def test_folder_sorted_by_name(tmp_path):
    clip = generate_clip(frames=3, height=16, width=24, objects=1, seed=0)
    for name, frame in zip(["b", "a", "c"], clip.frames):
        Image.fromarray(frame).save(tmp_path / f"{name}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    frames = open_frames(tmp_path)
    assert isinstance(frames, FrameFolder) and frames.names == ["a", "b", "c"] and frames.size == (16, 24)
    got = list(frames)
    assert [n for n, _ in got] == ["a", "b", "c"]
    assert np.array_equal(got[0][1], clip.frames[1])


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no frames"):
        open_frames(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (24, 16)).save(mixed / "00000.jpg")
    Image.new("RGB", (20, 16)).save(mixed / "00001.jpg")
    with pytest.raises(InputError, match="frames differ in size: 00001.jpg is 20x16 but 00000.jpg is 24x16"):
        open_frames(mixed)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="cannot be opened as a video|no frame that can be decoded"):
        open_frames(tmp_path / "broken.mp4")
    with pytest.raises(InputError, match="single image"):
        open_frames(mixed / "00000.jpg")


def test_video_file(tmp_path):
    import cv2

    clip = generate_clip(frames=5, height=32, width=48, objects=1, seed=0)
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (48, 32))
    assert writer.isOpened()
    for f in clip.frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    video = open_frames(path)
    assert isinstance(video, VideoFile) and video.size == (32, 48)
    got = list(video)
    assert [n for n, _ in got] == ["00000", "00001", "00002", "00003", "00004"]
    assert np.abs(got[2][1].astype(int) - clip.frames[2]).mean() < 12  # lossy codec
