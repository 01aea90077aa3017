"""The adversarial suite: what a careless user or an attacker feeds the six tools.

Every test drives a tool (mostly its ``main`` in-process, so the suite stays fast; a few
through the console scripts) and asserts: the exit status, no traceback, the one-line
message, and that no input and no earlier output changed (sha256 of every file before and
after, with :func:`snapshot`). Sizes are tiny (48x64 frames, the ``small`` preset).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from runtime.io.mask_io import write_mask
from stmae import generate_clip
from tests.runtime.conftest import _cpu_settings  # noqa: F401  (the same autouse fixture)


def snapshot(*roots: Path) -> dict[str, str]:
    """{path: sha256} of every file under ``roots`` (files or folders), names included."""
    out: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_line_error(err: str, prog: str, *needles: str) -> str:
    """The stderr of a refused command: exactly one line, ``<prog>: error: ...``, no
    traceback, containing every needle."""
    text = err.strip()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def run_main(main, capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_script(name: str, *args, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"console script {name} is not installed (pip install -e .)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([found, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=cwd)


def write_frames(folder: Path, frames: np.ndarray, names=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        name = names[i] if names else f"{i:05d}"
        Image.fromarray(frame).save(folder / f"{name}.png")


def write_video(path: Path, frames: np.ndarray, fps: float = 10.0) -> Path:
    """An MJPG AVI (its header announces the frame count; a cut file keeps the header)."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def png_header(path: Path, width: int, height: int, bit_depth: int = 8, colour: int = 0) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (with a tiny, incomplete body):
    what a decompression bomb looks like to a reader that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture()
def clip():
    return generate_clip(frames=6, height=48, width=64, objects=2, seed=3)


@pytest.fixture()
def video(tmp_path, clip):
    """(frames folder, first-mask PNG): 6 synthetic 48x64 frames, 2 objects."""
    frames = tmp_path / "frames"
    write_frames(frames, clip.frames)
    mask = tmp_path / "first.png"
    write_mask(mask, clip.masks[0])
    return frames, mask


@pytest.fixture()
def seg_args(seeded_small_checkpoint):
    """Common stmae-segment options: the small seeded checkpoint, CPU, frames as they are."""
    return ["--checkpoint", seeded_small_checkpoint, "--size", -1, "--device", "cpu", "--quiet"]
