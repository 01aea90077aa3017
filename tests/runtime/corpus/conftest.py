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
from runtime.corpus.worker_setup import BackendSpec, WorkerSetup, fingerprint_of
from runtime.io.mask_io import read_mask, write_mask
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


# ---- a corpus for --streams: videos of different lengths and object counts ----------------
# The shipped trained model: a randomly initialised network leaves many pixels with channels
# tied within float noise, where batching may flip a label (see tests/runtime/test_engine.py).
TRAINED = Path(__file__).resolve().parents[3] / "weights" / "stmae_small_davis240_v3.pth"
STREAMS_CONFIG = SessionConfig(size=-1, mem_every=2, max_memory_frames=2, top_k=9)
# name -> (frames, objects); "vid" is a video file; "late" gets object 2 at frame 2 from its masks folder.
LENGTHS = {"alpha": (7, 1), "beta": (4, 3), "gamma": (6, 2), "late": (5, 2), "vid": (3, 1)}
# Clips whose masks have no near-tie: alone, the top two channels of every pixel differ by
# > 5e-3 (many synthetic clips have exact ties between overlapping objects, where the
# batched step, within 1e-5 of the one-stream step, may pick either label).
SEEDS = {"alpha": 32, "beta": 38, "gamma": 32, "late": 58, "vid": 31}


@pytest.fixture(scope="session")
def trained() -> Path:
    if not TRAINED.is_file():
        pytest.skip(f"the shipped trained model {TRAINED} is missing")
    return TRAINED


def streams_setup(checkpoint: Path, out: Path, streams: int = 1, max_frames: int | None = None) -> WorkerSetup:
    spec = BackendSpec("torch", str(checkpoint), None, "cpu", "fp32")
    return WorkerSetup(spec, STREAMS_CONFIG, out, fingerprint_of(spec, STREAMS_CONFIG, max_frames), max_frames,
                       threads=1, streams=streams)


@pytest.fixture(scope="session")
def streams_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(videos, masks): frame folders of 7, 4, 6 and 5 frames (1-3 objects; 'late' has a
    second object introduced by its mask of frame 2) and a 3-frame video file."""
    root = tmp_path_factory.mktemp("streams-corpus")
    videos, masks = root / "videos", root / "masks"
    masks.mkdir()
    for name, (frames, objects) in LENGTHS.items():
        clip = generate_clip(frames=frames, height=40, width=56, objects=objects, seed=SEEDS[name])
        if name == "vid":
            videos.mkdir(exist_ok=True)
            write_video(videos / "vid.avi", clip.frames)
        else:
            write_frames(videos / name, clip.frames, ".png")
        if name == "late":
            (masks / name).mkdir()
            first = clip.masks[0].copy()
            first[first == 2] = 0
            write_mask(masks / name / "00000.png", first)
            write_mask(masks / name / "00002.png", np.where(clip.masks[2] == 2, 2, 0).astype(np.uint8))
        else:
            write_mask(masks / f"{name}.png", clip.masks[0])
    return videos, masks


@pytest.fixture(scope="session")
def streams_reference(streams_corpus, trained, tmp_path_factory) -> dict[str, np.ndarray]:
    """Masks of the sequential run (one video at a time, in this process)."""
    out = tmp_path_factory.mktemp("streams-reference") / "out"
    summary = run_corpus(discover_jobs(*streams_corpus), streams_setup(trained, out))
    assert sorted(summary.done) == sorted(LENGTHS) and not summary.failed
    outputs = read_outputs(out)
    assert len(outputs) == sum(n for n, _ in LENGTHS.values())
    return outputs
