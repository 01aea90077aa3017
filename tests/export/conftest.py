"""Exports shared by the export tests: made once per test session, at small sizes.

The published architecture with the contract's weights rule (a published-format
checkpoint) is exported at 64x96 and checked at other sizes; fp16/int8 are calibrated on a
few DAVIS frames (``boat``) and verified on another sequence (``bear``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from export.config import ExportConfig
from export.exporter import run_export
from stmae.checkpoint import save_checkpoint
from stmae.config import preset
from stmae.network import STMAE
from stmae.reference_weights import reference_weights_for

VERIFY_SEQ = "bear"
CALIB_SEQ = "boat"
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


def _davis_dirs(davis: Path, seq: str) -> tuple[Path, Path]:
    return davis / "JPEGImages" / "240p" / seq, davis / "Annotations" / "240p" / seq


def _export(tmp_path_factory, checkpoint: Path, davis: Path, precision: str, **options):
    frames, masks = _davis_dirs(davis, VERIFY_SEQ)
    config = ExportConfig(
        checkpoint=checkpoint,
        out_dir=tmp_path_factory.mktemp(f"export_{precision}") / "out",
        precision=precision,
        calibration=None if precision == "fp32" else _davis_dirs(davis, CALIB_SEQ)[0],
        calibration_frames=3,
        verify_frames=frames,
        verify_masks=masks,
        verify_max_frames=4,
        work_size=WORK_SIZE,
        **options,
    )
    return run_export(config, log=lambda m: print(f"[{precision}] {m}"))


@pytest.fixture(scope="session")
def fp32_export(tmp_path_factory, published_checkpoint, davis):
    return _export(tmp_path_factory, published_checkpoint, davis, "fp32")


@pytest.fixture(scope="session")
def fp16_export(tmp_path_factory, published_checkpoint, davis):
    return _export(tmp_path_factory, published_checkpoint, davis, "fp16")


@pytest.fixture(scope="session")
def int8_export(tmp_path_factory, published_checkpoint, davis):
    return _export(tmp_path_factory, published_checkpoint, davis, "int8")


@pytest.fixture(scope="session")
def int8_ort_quantizer_export(tmp_path_factory, small_checkpoint, davis) -> Path:
    """int8 with ONNX Runtime's quantizer (the CPU layout), small preset. Made by the CLI in
    a new process: ONNX Runtime's quantizer refuses to run where ModelOpt's already ran."""
    frames, masks = _davis_dirs(davis, VERIFY_SEQ)
    out = tmp_path_factory.mktemp("export_int8_ort") / "out"
    cmd = [
        sys.executable, "-m", "export.cli", str(small_checkpoint), "--out", str(out), "--precision", "int8",
        "--int8-quantizer", "onnxruntime", "--calibration", str(_davis_dirs(davis, CALIB_SEQ)[0]),
        "--calibration-frames", "3", "--verify-frames", str(frames), "--verify-masks", str(masks),
        "--verify-max-frames", "4", "--work-size", str(WORK_SIZE),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out
