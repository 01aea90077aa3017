"""Exports shared by the export tests: made once per test session, at small sizes.

The published architecture with the contract's weights rule (a published-format
checkpoint) is exported at 64x96 and checked at other sizes; fp16/int8 are calibrated on a
few DAVIS frames (``boat``) and verified on another sequence (``bear``). Without the
shared DAVIS data, seeded synthetic clips with exact masks, written as frame and mask
folders, take their place (so these tests run everywhere).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.config import ExportConfig
from export.exporter import run_export
from stmae.checkpoint import save_checkpoint
from stmae.config import preset
from stmae.network import STMAE
from stmae.reference_weights import reference_weights_for
from stmae.synthetic import generate_clip
from tests.conftest import davis_root

VERIFY_SEQ = "bear"
CALIB_SEQ = "boat"
OTHER_SEQ = "car-turn"
WORK_SIZE = 112


@pytest.fixture(scope="session")
def published_checkpoint(tmp_path_factory, reference_model) -> Path:
    """A plain published-format state dict made by the contract's weights rule."""
    path = tmp_path_factory.mktemp("ckpt") / "published_rule.pth"
    torch.save(reference_model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    model = STMAE(preset("small"))
    model.load_state_dict(reference_weights_for(model))
    path = tmp_path_factory.mktemp("ckpt_small") / "small.pth"
    save_checkpoint(path, model)
    return path


@dataclass(frozen=True)
class ClipDirs:
    """Folders of frames (and masks) the export tests use: real DAVIS 240p sequences when
    the shared data is there, else synthetic clips written as DAVIS-style folders."""

    calibration: Path
    verify_frames: Path
    verify_masks: Path
    other_frames: Path
    other_masks: Path
    source: str


def _write_synthetic(root: Path, name: str, seed: int, frames: int = 8) -> tuple[Path, Path]:
    clip = generate_clip(frames=frames, height=120, width=214, objects=2, seed=seed, style="scene")
    images, masks = root / "JPEGImages" / name, root / "Annotations" / name
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for t in range(frames):
        Image.fromarray(clip.frames[t]).save(images / f"{t:05d}.png")
        Image.fromarray(clip.masks[t].astype(np.uint8), mode="L").save(masks / f"{t:05d}.png")
    return images, masks


@pytest.fixture(scope="session")
def clip_dirs(tmp_path_factory) -> ClipDirs:
    davis = davis_root()
    if (davis / "JPEGImages" / "240p").is_dir():
        def seq(name: str) -> tuple[Path, Path]:
            return davis / "JPEGImages" / "240p" / name, davis / "Annotations" / "240p" / name

        (calib, _), (vf, vm), (of, om) = seq(CALIB_SEQ), seq(VERIFY_SEQ), seq(OTHER_SEQ)
        return ClipDirs(calib, vf, vm, of, om, "DAVIS 2016 240p")
    root = tmp_path_factory.mktemp("synthetic_clips")
    (calib, _), (vf, vm), (of, om) = (_write_synthetic(root, n, s) for n, s in (("calib", 11), ("verify", 12), ("other", 13)))
    return ClipDirs(calib, vf, vm, of, om, "synthetic clips (no shared DAVIS data)")


def _export(tmp_path_factory, checkpoint: Path, clips: ClipDirs, precision: str, **options):
    config = ExportConfig(
        checkpoint=checkpoint,
        out_dir=tmp_path_factory.mktemp(f"export_{precision}") / "out",
        precision=precision,
        calibration=None if precision == "fp32" else clips.calibration,
        calibration_frames=3,
        verify_frames=clips.verify_frames,
        verify_masks=clips.verify_masks,
        verify_max_frames=4,
        work_size=WORK_SIZE,
        **options,
    )
    return run_export(config, log=lambda m: print(f"[{precision}] {m}"))


@pytest.fixture(scope="session")
def fp32_export(tmp_path_factory, published_checkpoint, clip_dirs):
    return _export(tmp_path_factory, published_checkpoint, clip_dirs, "fp32")


@pytest.fixture(scope="session")
def fp16_export(tmp_path_factory, published_checkpoint, clip_dirs):
    return _export(tmp_path_factory, published_checkpoint, clip_dirs, "fp16")


@pytest.fixture(scope="session")
def int8_export(tmp_path_factory, published_checkpoint, clip_dirs):
    """int8 for TensorRT (ModelOpt's Q/DQ layout), in this process."""
    return _export(tmp_path_factory, published_checkpoint, clip_dirs, "int8", target="tensorrt")


@pytest.fixture(scope="session")
def int8_ort_quantizer_export(tmp_path_factory, small_checkpoint, clip_dirs) -> Path:
    """int8 for the CPU (--target cpu: ONNX Runtime's quantizer, the CPU layout), small
    preset. Made by the CLI in a new process: ONNX Runtime's quantizer refuses to run where
    ModelOpt's already ran."""
    out = tmp_path_factory.mktemp("export_int8_ort") / "out"
    cmd = [
        sys.executable, "-m", "export.cli", str(small_checkpoint), "--out", str(out), "--precision", "int8",
        "--target", "cpu", "--calibration", str(clip_dirs.calibration),
        "--calibration-frames", "3", "--verify-frames", str(clip_dirs.verify_frames), "--verify-masks",
        str(clip_dirs.verify_masks), "--verify-max-frames", "4", "--work-size", str(WORK_SIZE),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out
