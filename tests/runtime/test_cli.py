"""stmae-segment and stmae-eval: end to end through the console scripts on real DAVIS
frames with a published-format checkpoint, and every bad input with its message."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.cli import eval_main, segment_main
from runtime.io.mask_io import read_mask, write_mask
from stmae import generate_clip

from .conftest import subprocess_env, write_frames


def script(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"console script {name} is not installed (pip install -e .)")
    return found


def run_script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([script(name), *map(str, args)], capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)


def davis_subset(davis: Path, dest: Path, names=("bear", "boat"), count=5) -> Path:
    """A DAVIS-layout copy of the first ``count`` 240p frames of ``names``."""
    for name in names:
        for kind, ext in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
            src = davis / kind / "240p" / name
            dst = dest / kind / "240p" / name
            dst.mkdir(parents=True)
            for f in sorted(src.glob(f"*{ext}"))[:count]:
                shutil.copy(f, dst / f.name)
    (dest / "ImageSets" / "2016").mkdir(parents=True)
    (dest / "ImageSets" / "2016" / "mini.txt").write_text("\n".join(names) + "\n")
    return dest


def test_segment_console_script_on_davis(davis, published_checkpoint, tmp_path):
    data = davis_subset(davis, tmp_path / "d", names=("bear",), count=6)
    frames = data / "JPEGImages" / "240p" / "bear"
    mask = data / "Annotations" / "240p" / "bear" / "00000.png"
    out = tmp_path / "masks"
    proc = run_script("stmae-segment", "--checkpoint", published_checkpoint, "--input", frames,
                      "--mask", mask, "--out", out, "--size", 64, "--device", "cpu",
                      "--overlay", tmp_path / "overlay.mp4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"6 frames, 1 object, backend torch \(\$STMAE_BACKEND\), size 64 \(--size\), "
                        r"mem every 5 \(auto: the checkpoint records none, published 5\), [\d.]+ s, [\d.]+ FPS -> .*masks",
                        lines[-1]), lines
    # stderr is not a terminal here: progress comes as plain lines, no carriage returns.
    assert "6/6 frame (" in proc.stderr and "frame/s" in proc.stderr and "\r" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [".stmae-output.json"] + [f"{i:05d}.png" for i in range(6)]
    labels, palette = read_mask(out / "00003.png")
    _, given_palette = read_mask(mask)
    assert labels.shape == (240, 427) and palette == given_palette
    first, _ = read_mask(out / "00000.png")
    assert np.array_equal(first, read_mask(mask)[0])
    assert (tmp_path / "overlay.mp4").stat().st_size > 0
    # Again: refused without --overwrite.
    again = run_script("stmae-segment", "--checkpoint", published_checkpoint, "--input", frames,
                       "--mask", mask, "--out", out, "--size", 64, "--device", "cpu")
    assert again.returncode == 2 and "already has 6 mask(s)" in again.stderr
    assert "Traceback" not in again.stderr


def test_eval_console_script_on_davis(davis, published_checkpoint, tmp_path):
    data = davis_subset(davis, tmp_path / "d")
    out = tmp_path / "eval"
    proc = run_script("stmae-eval", "--checkpoint", published_checkpoint, "--dataset", data,
                      "--split", "mini", "--resolution", "240p", "--size", 64, "--device", "cpu",
                      "--out", out)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"J&F \d\.\d{4}  J \d\.\d{4}  F \d\.\d{4}", last), last
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "sequence,J,F,J&F" and [r.split(",")[0] for r in rows[1:]] == ["bear", "boat"]
    for seq in ("bear", "boat"):
        assert len(list((out / seq).glob("*.png"))) == 5
    js = [float(r.split(",")[1]) for r in rows[1:]]
    fs = [float(r.split(",")[2]) for r in rows[1:]]
    j, f = float(last.split()[3]), float(last.split()[5])
    assert j == pytest.approx(np.mean(js), abs=2e-4) and f == pytest.approx(np.mean(fs), abs=2e-4)


# ---- bad input: one line, exit status 2, the message says what is wrong -----------------


def run_main(main, capsys, *args):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_segment_bad_inputs(tmp_path, tiny_video, small_checkpoint, capsys):
    frames_dir, mask, clip = tiny_video
    base = ["--checkpoint", small_checkpoint, "--size", -1, "--device", "cpu", "--quiet"]

    def seg(*args):
        return run_main(segment_main, capsys, *base, *args)

    small = tmp_path / "small.png"
    write_mask(small, np.ones((20, 30), np.uint8))
    code, err = seg("--input", frames_dir, "--mask", small, "--out", tmp_path / "o1")
    assert code == 2 and "is 30x20 but the frames are 64x48" in err
    assert not (tmp_path / "o1").exists()  # nothing written

    empty_mask = tmp_path / "empty.png"
    write_mask(empty_mask, np.zeros((48, 64), np.uint8))
    code, err = seg("--input", frames_dir, "--mask", empty_mask, "--out", tmp_path / "o2")
    assert code == 2 and "has no object" in err

    code, err = seg("--input", tmp_path / "nothing.mp4", "--mask", mask, "--out", tmp_path / "o3")
    assert code == 2 and "does not exist" in err

    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 50)
    code, err = seg("--input", tmp_path / "bad.mp4", "--mask", mask, "--out", tmp_path / "o4")
    assert code == 2 and ("cannot be opened as a video" in err or "no frame that can be decoded" in err)

    (tmp_path / "none").mkdir()
    code, err = seg("--input", tmp_path / "none", "--mask", mask, "--out", tmp_path / "o5")
    assert code == 2 and "has no frames" in err

    mixed = tmp_path / "mixed"
    write_frames(mixed, clip.frames[:2], ".png")
    Image.fromarray(clip.frames[2][:40]).save(mixed / "00002.png")
    code, err = seg("--input", mixed, "--mask", mask, "--out", tmp_path / "o6")
    assert code == 2 and "frames differ in size: 00002.png is 64x40 but 00000.png is 64x48" in err

    out = tmp_path / "o7"
    out.mkdir()
    write_mask(out / "00000.png", np.zeros((48, 64), np.uint8))
    code, err = seg("--input", frames_dir, "--mask", mask, "--out", out)
    assert code == 2 and "already has 1 mask(s)" in err and "--overwrite" in err
    # --overwrite replaces only masks stmae-segment wrote (its record): not these ...
    code, err = seg("--input", frames_dir, "--mask", mask, "--out", out, "--overwrite")
    assert code == 2 and "no stmae-segment record" in err and len(list(out.glob("*.png"))) == 1
    # ... but a run's own output, yes.
    own = tmp_path / "o7b"
    assert seg("--input", frames_dir, "--mask", mask, "--out", own)[0] == 0
    code, err = seg("--input", frames_dir, "--mask", mask, "--out", own, "--overwrite")
    assert code == 0 and len(list(own.glob("*.png"))) == 6

    code, err = seg("--input", frames_dir, "--mask", mask, "--out", frames_dir, "--overwrite")
    assert code == 2 and "is the same path as --input" in err
    (tmp_path / "ov.mp4").write_bytes(b"old")
    code, err = seg("--input", frames_dir, "--mask", mask, "--out", tmp_path / "o10", "--overlay", tmp_path / "ov.mp4")
    assert code == 2 and "ov.mp4 already exists" in err and (tmp_path / "ov.mp4").read_bytes() == b"old"

    code, err = seg("--input", frames_dir, "--out", tmp_path / "o8")
    assert code == 2 and "no mask given" in err
    code, err = run_main(segment_main, capsys, "--input", frames_dir, "--mask", mask, "--out", tmp_path / "o9")
    assert code == 2 and "--checkpoint is required" in err
    code, err = seg("--input", frames_dir, "--mask", mask, "--out", tmp_path / "o9", "--backend", "onnxruntime")
    assert code == 2 and "--export-dir is required" in err
    code, err = seg("--input", frames_dir, "--mask", mask, "--out", tmp_path / "o9", "--mem-every", 0)
    assert code == 2 and "--mem-every 0: expected 'auto' or a whole number of frames >= 1" in err
    code, err = run_main(segment_main, capsys, "--checkpoint", tmp_path / "none.pth", "--input", frames_dir,
                         "--mask", mask, "--out", tmp_path / "o9", "--device", "cpu")
    assert code == 2 and "none.pth does not exist" in err


def test_segment_bad_input_through_console_script(tmp_path, tiny_video, small_checkpoint):
    frames_dir, _, _ = tiny_video
    small = tmp_path / "small.png"
    write_mask(small, np.ones((20, 30), np.uint8))
    proc = run_script("stmae-segment", "--checkpoint", small_checkpoint, "--input", frames_dir,
                      "--mask", small, "--out", tmp_path / "o")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"stmae-segment: error: mask {small} is 30x20 but the frames are 64x48; the mask must have the frames' size"
    ]


def test_masks_dir_adds_objects_later(tmp_path, tiny_video, small_checkpoint, capsys):
    frames_dir, _, clip = tiny_video
    masks = tmp_path / "given"
    masks.mkdir()
    write_mask(masks / "00000.png", np.where(clip.masks[0] == 1, 1, 0).astype(np.uint8))
    write_mask(masks / "00003.png", clip.masks[3])  # object 2 appears; 1 is known already
    code = segment_main(["--checkpoint", str(small_checkpoint), "--input", str(frames_dir), "--masks-dir",
                         str(masks), "--out", str(tmp_path / "out"), "--size", "-1", "--device", "cpu", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "6 frames, 2 objects" in out
    for t in range(3):
        assert 2 not in read_mask(tmp_path / "out" / f"{t:05d}.png")[0]
    third, _ = read_mask(tmp_path / "out" / "00003.png")
    assert np.all(third[clip.masks[3] == 2] == 2)

    write_mask(masks / "zz.png", clip.masks[3])
    code, err = run_main(segment_main, capsys, "--checkpoint", small_checkpoint, "--input", frames_dir,
                         "--masks-dir", masks, "--out", tmp_path / "out2", "--device", "cpu")
    assert code == 2 and "zz.png is named after no input frame" in err


def test_segment_video_file_with_overlay(tmp_path, small_checkpoint, capsys):
    import cv2

    clip = generate_clip(frames=4, height=48, width=64, objects=1, seed=4)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for f in clip.frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    mask = tmp_path / "m.png"
    write_mask(mask, clip.masks[0])
    code = segment_main(["--checkpoint", str(small_checkpoint), "--input", str(video), "--mask", str(mask),
                         "--out", str(tmp_path / "out"), "--size", "-1", "--device", "cpu", "--quiet",
                         "--overlay", str(tmp_path / "ov.mp4")])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".stmae-output.json"] + [f"{i:05d}.png" for i in range(4)]
    capture = cv2.VideoCapture(str(tmp_path / "ov.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 4
    assert not list(tmp_path.glob(".ov*"))  # no temp file left


def test_eval_bad_inputs(tmp_path, small_checkpoint, capsys):
    base = ["--checkpoint", small_checkpoint, "--device", "cpu", "--quiet", "--out", tmp_path / "out"]
    code, err = run_main(eval_main, capsys, "--dataset", tmp_path / "missing", "--split", "val", *base)
    assert code == 2 and "does not exist" in err
    (tmp_path / "d" / "JPEGImages").mkdir(parents=True)
    code, err = run_main(eval_main, capsys, "--dataset", tmp_path / "d", *base)
    assert code == 2 and "exactly one of --split" in err
    code, err = run_main(eval_main, capsys, "--dataset", tmp_path / "d", "--split", "val", *base)
    assert code == 2 and "split 'val' not found" in err
    # The splits that do exist are listed.
    (tmp_path / "d" / "ImageSets" / "2016").mkdir(parents=True)
    (tmp_path / "d" / "ImageSets" / "2016" / "train.txt").write_text("bear\n")
    code, err = run_main(eval_main, capsys, "--dataset", tmp_path / "d", "--split", "val", *base)
    assert code == 2 and "splits here (year/split): 2016/train" in err
