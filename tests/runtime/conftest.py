"""Fixtures of the runtime tests: checkpoints (small preset, published format), tiny
synthetic videos on disk; CPU settings for speed: denormals flushed (randomly initialised
networks produce them; they slow CPU convolutions several-fold and change nothing above
1e-38) and one intra-op thread (tiny tensors on a shared 2-core machine run many times
faster than with spinning worker threads). Both are restored after each test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.io.mask_io import write_mask
from stmae import STMAE, generate_clip, preset, save_checkpoint
from stmae.reference_weights import reference_weights_for


@pytest.fixture(autouse=True)
def _cpu_settings():
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


def subprocess_env() -> dict[str, str]:
    """Environment for console-script tests: one thread per process (see above)."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def default_sigint() -> None:
    """``preexec_fn`` for Ctrl-C tests: give the child the default SIGINT disposition. A
    test run started in the background by a non-interactive shell (``cmd &``, e.g. a CI
    script) inherits SIGINT as ignored, and Python then installs no KeyboardInterrupt
    handler, so the child would never see the Ctrl-C the test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def small_model() -> STMAE:
    torch.manual_seed(0)
    return STMAE(preset("small")).eval()


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory, small_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    save_checkpoint(path, small_model)
    return path


@pytest.fixture(scope="session")
def published_checkpoint(tmp_path_factory) -> Path:
    """A published-format checkpoint (a plain state dict, no config) with the contract's
    rule weights."""
    path = tmp_path_factory.mktemp("ckpt") / "published.pth"
    model = STMAE()
    torch.save(reference_weights_for(model), path)
    return path


def write_frames(folder: Path, frames: np.ndarray, ext: str = ".jpg") -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = folder / f"{i:05d}{ext}"
        Image.fromarray(frame).save(path, quality=95) if ext == ".jpg" else Image.fromarray(frame).save(path)
        paths.append(path)
    return paths


@pytest.fixture()
def tiny_video(tmp_path):
    """(frames folder, first-mask path, clip): 6 synthetic 48x64 frames, 2 objects."""
    clip = generate_clip(frames=6, height=48, width=64, objects=2, seed=3)
    frames_dir = tmp_path / "frames"
    write_frames(frames_dir, clip.frames, ".png")
    mask = tmp_path / "first.png"
    write_mask(mask, clip.masks[0])
    return frames_dir, mask, clip
