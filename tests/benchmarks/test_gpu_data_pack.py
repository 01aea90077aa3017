"""benchmarks/gpu_data_pack.py: a DAVIS layout survives pack -> unpack (frame names,
counts, sizes, first-frame labels exactly, pixels near-lossless), held-out videos stay
behind, and bad input exits 2 with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")
pytest.importorskip("cv2")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_data_pack.py"


def _davis(root: Path) -> None:
    from stmae import generate_clip

    for seed, name in enumerate(("alpha", "beta", "held")):
        clip = generate_clip(frames=6, height=48, width=63, objects=1, seed=seed)  # odd width on purpose
        frames = root / "JPEGImages" / "240p" / name
        labels = root / "Annotations" / "240p" / name
        frames.mkdir(parents=True)
        labels.mkdir(parents=True)
        for t, frame in enumerate(clip.frames):
            Image.fromarray(frame).save(frames / f"{t:05d}.jpg", quality=95)
        Image.fromarray(clip.masks[0]).save(labels / "00000.png")


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO)


def test_pack_then_unpack_gives_back_the_davis_layout(tmp_path):
    src, pack, out = tmp_path / "src", tmp_path / "pack", tmp_path / "out"
    _davis(src)
    assert _run("pack", src, "240p", pack, "--exclude", "held").returncode == 0
    done = _run("unpack", pack, out)
    assert done.returncode == 0, done.stderr
    assert (out / "ImageSets" / "2016" / "train.txt").read_text().split() == ["alpha", "beta"]
    assert not (out / "JPEGImages" / "240p" / "held").exists()
    for name in ("alpha", "beta"):
        got = sorted(p.name for p in (out / "JPEGImages" / "240p" / name).iterdir())
        assert got == [f"{t:05d}.jpg" for t in range(6)]
        for t in range(6):
            a = np.asarray(Image.open(src / "JPEGImages" / "240p" / name / f"{t:05d}.jpg").convert("RGB"), float)
            b = np.asarray(Image.open(out / "JPEGImages" / "240p" / name / f"{t:05d}.jpg").convert("RGB"), float)
            assert a.shape == b.shape == (48, 63, 3)
            assert 10 * np.log10(255**2 / ((a - b) ** 2).mean()) > 30  # near-lossless
        labels = sorted((out / "Annotations" / "240p" / name).iterdir())
        assert [p.name for p in labels] == ["00000.png"]
        assert np.array_equal(np.asarray(Image.open(labels[0])),
                              np.asarray(Image.open(src / "Annotations" / "240p" / name / "00000.png")))


def test_bad_input_exits_2_with_one_line(tmp_path):
    for args in (("pack", tmp_path / "missing", "240p", tmp_path / "p"), ("unpack", tmp_path, tmp_path / "o")):
        done = _run(*args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
