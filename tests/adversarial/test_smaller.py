"""Class 5, the smaller ones: temp files, truncated videos, void 255, natural order,
permissions; and the atomic-write helper every writer uses."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.cli import segment_main
from runtime.io.frames import FrameFolder
from runtime.io.mask_io import existing_masks, read_mask, write_mask
from runtime.metrics import evaluate_objects
from runtime.io.overlay import OverlayWriter
from stmae import STMAE, preset, save_checkpoint
from stmae.atomic import AtomicPath, atomic_write, atomic_write_text, is_temp_name, remove_stale_temps

from .conftest import one_line_error, run_main, snapshot, write_frames, write_video


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_temp_files_of_a_killed_run_are_ignored_and_cleaned(tmp_path, video, seg_args, capsys):
    """kill -9 leaves ``.<name>.stmae-tmp-<pid>-<token><ext>``: the next run into the same
    output ignores it (not a mask) and removes it (its process is gone)."""
    frames, mask = video
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    stale_mask = out / f".00003.png.stmae-tmp-{dead}-0badc0de.png"
    stale_overlay = tmp_path / f".ov.mp4.stmae-tmp-{dead}-0badc0de.mp4"
    stale_mask.write_bytes(b"half a png")
    stale_overlay.write_bytes(b"half a video")
    assert existing_masks(out) == []  # a temp file is not a mask (no "already has masks")
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", mask, "--out", out,
                            "--overlay", tmp_path / "ov.mp4")
    assert code == 0, err
    assert not stale_mask.exists() and not stale_overlay.exists()
    assert not [p for p in tmp_path.rglob("*") if is_temp_name(p.name)]


def test_live_temp_files_are_left_alone(tmp_path):
    mine = tmp_path / f".x.png.stmae-tmp-{os.getpid()}-00000000.png"
    mine.write_bytes(b"being written")
    assert remove_stale_temps(tmp_path) == [] and mine.exists()


def test_truncated_video_warns_with_the_count_and_exits_1(tmp_path, seg_args, capsys):
    """Decision: the decoded frames' masks are kept, stderr says how many announced frames
    are missing, and the exit status is 1 (a script must not take it for a full run)."""
    from stmae import generate_clip

    clip = generate_clip(frames=12, height=48, width=64, objects=2, seed=3)
    full = write_video(tmp_path / "full.avi", clip.frames)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    mask = tmp_path / "m.png"
    write_mask(mask, clip.masks[0])
    code, out, err = run_main(segment_main, capsys, *seg_args, "--input", cut, "--mask", mask, "--out", tmp_path / "o")
    decoded = len(list((tmp_path / "o").glob("*.png")))
    assert code == 1 and 0 < decoded < 12
    assert "Traceback" not in err
    warning = [line for line in err.splitlines() if line.startswith("stmae-segment: warning:")]
    assert len(warning) == 1 and f"after {decoded} of the 12 frames" in warning[0] and f"{12 - decoded} missing" in warning[0]
    assert f"({12 - decoded} announced frames missing)" in out
    code, out, err = run_main(segment_main, capsys, *seg_args, "--input", full, "--mask", mask, "--out", tmp_path / "o2")
    assert code == 0 and "warning" not in err


def test_void_255_is_not_an_object(tmp_path, video, clip, seg_args, capsys):
    frames, _ = video
    labels = clip.masks[0].copy()
    labels[:6, :] = 255  # a void band, as in DAVIS annotations
    void_mask = tmp_path / "void.png"
    write_mask(void_mask, labels)
    code, out, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", void_mask, "--out", tmp_path / "o")
    assert code == 0, err
    assert out.startswith("6 frames, 2 objects")  # 1 and 2, not 255
    for png in (tmp_path / "o").glob("*.png"):
        assert 255 not in np.unique(read_mask(png)[0])
    only_void = tmp_path / "only_void.png"
    write_mask(only_void, np.where(labels == 255, 255, 0).astype(np.uint8))
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", only_void, "--out", tmp_path / "o3")
    assert code == 2
    one_line_error(err, "stmae-segment", "has no object", "255 (void)")


def test_void_pixels_are_left_out_of_the_scores():
    """DAVIS 2017 toolkit: void pixels count for neither mask in J and F."""
    gt = np.zeros((3, 40, 40), np.uint8)
    gt[:, 10:30, 10:30] = 1
    gt[:, :, 35:] = 255
    pred = (gt == 1).astype(np.uint8)
    pred[:, :, 35:] = 1  # the prediction also covers the void band: not an error
    scores = evaluate_objects(list(pred), list(gt))
    assert [s.label for s in scores] == [1]  # 255 is never an object
    assert scores[0].J == pytest.approx(1.0) and scores[0].F == pytest.approx(1.0)


def test_frames_and_masks_sort_naturally(tmp_path):
    folder = tmp_path / "f"
    frames = np.zeros((12, 8, 8, 3), np.uint8)
    names = [f"frame_{i}" for i in range(1, 13)]
    write_frames(folder, frames, names)
    assert FrameFolder(folder).names == names  # frame_2 before frame_10
    (tmp_path / "m").mkdir()
    for name in reversed(names):
        write_mask(tmp_path / "m" / f"{name}.png", np.zeros((8, 8), np.uint8))
    assert [p.stem for p in existing_masks(tmp_path / "m")] == names


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_are_written_with_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        expected = 0o666 & ~umask
        write_mask(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
        torch.manual_seed(0)
        save_checkpoint(tmp_path / "c.pth", STMAE(preset("small")))
        atomic_write_text(tmp_path / "r.csv", "a,b\n")
        with OverlayWriter(tmp_path / "o.mp4", 10.0, (16, 16)) as writer:
            writer.add(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.uint8))
        for name in ("m.png", "c.pth", "r.csv", "o.mp4"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    finally:
        os.umask(old)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as fh:
            fh.write("new, half")
            raise RuntimeError("disk went away")
    with pytest.raises(RuntimeError):
        with AtomicPath(tmp_path / "chart.png") as t:
            Image.new("L", (4, 4)).save(t.tmp, format="PNG")
            raise RuntimeError("plotting failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_snapshot_helper_sees_a_changed_byte(tmp_path):
    """The suite's hash comparison would catch a single changed byte."""
    (tmp_path / "a").write_bytes(b"abc")
    before = snapshot(tmp_path)
    (tmp_path / "a").write_bytes(b"abd")
    assert snapshot(tmp_path) != before
