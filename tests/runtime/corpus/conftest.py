"""A tiny corpus on disk: three folders of frames and one video file, with first masks in
a parallel folder; a worker setup for the small checkpoint; the sequential reference run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.config import SessionConfig
from runtime.corpus.jobs import discover_jobs
from runtime.corpus.run import run_corpus
from runtime.corpus.worker import BackendSpec, WorkerSetup, fingerprint_of
from runtime.mask_io import read_mask, write_mask
from stmae import generate_clip
from tests.runtime.conftest import write_frames

FRAMES = 6
CONFIG = SessionConfig(size=-1, mem_every=2)


def write_video(path: Path, frames: np.ndarray) -> None:
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(videos folder, masks folder): a, b, c (frame folders) and d.avi (video file)."""
    root = tmp_path_factory.mktemp("corpus")
    videos, masks = root / "videos", root / "masks"
    masks.mkdir()
    for seed, name in enumerate("abcd"):
        clip = generate_clip(frames=FRAMES, height=48, width=64, objects=2, seed=10 + seed)
        if name == "d":
            videos.mkdir(exist_ok=True)
            write_video(videos / "d.avi", clip.frames)
        else:
            write_frames(videos / name, clip.frames, ".png")
        write_mask(masks / f"{name}.png", clip.masks[0])
    return videos, masks


def make_setup(checkpoint: Path, out: Path, max_frames: int | None = None) -> WorkerSetup:
    spec = BackendSpec("torch", str(checkpoint), None, "cpu", "fp32")
    return WorkerSetup(spec, CONFIG, out, fingerprint_of(spec, CONFIG, max_frames), max_frames, threads=1)


def read_outputs(out: Path) -> dict[str, np.ndarray]:
    """'video/frame.png' -> label map, for every mask under ``out``."""
    return {f"{p.parent.name}/{p.name}": read_mask(p)[0] for p in sorted(out.glob("*/*.png"))}


def stray_files(out: Path) -> list[Path]:
    """Temp files left in the video folders (any hidden file there, whatever the writer)."""
    return [p for p in out.glob("*/*") if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.fixture(scope="session")
def reference(corpus, small_checkpoint, tmp_path_factory) -> dict[str, np.ndarray]:
    """Masks of the sequential run (in this process), the reference for every runner."""
    out = tmp_path_factory.mktemp("reference") / "out"
    videos, masks = corpus
    summary = run_corpus(discover_jobs(videos, masks), make_setup(small_checkpoint, out))
    assert sorted(summary.done) == list("abcd") and not summary.failed
    outputs = read_outputs(out)
    assert len(outputs) == 4 * FRAMES
    return outputs


def png_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def frame_image(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img)
