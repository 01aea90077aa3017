"""The fp16/int8 gate: what it measures, that it can see a bad candidate, and its refusal
(exit status 1, one line that says what to try next, nothing written)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from export.clips import synthetic_clip
from export.config import ExportConfig, GateThresholds
from export.exporter import ExportGateError, _pipeline_gate
from export.parity import pipeline_agreement
from runtime.backends.torch_backend import TorchBackend
from runtime.config import SessionConfig
from stmae import load_checkpoint

from .conftest import WORK_SIZE


def _verification(jf_ref, jf_cand, mean_iou=0.97) -> dict:
    return {"thresholds": {}, "pipeline": {"clip": "clip", "mean_iou": mean_iou, "pixel_agreement": 0.99,
                                           "jf_reference": jf_ref, "jf_candidate": jf_cand, "frames": 7}}


def test_with_ground_truth_the_gate_decides_on_the_accuracy_drop(tmp_path):
    config = ExportConfig(checkpoint=tmp_path / "c.pth", out_dir=tmp_path / "o", precision="int8",
                          thresholds=GateThresholds(int8_max_jf_drop=0.03))
    ok = _verification(0.80, 0.78, mean_iou=0.5)  # low agreement, small drop: accepted
    _pipeline_gate(config, ok)
    assert ok["gate"]["passed"] and ok["pipeline"]["jf_drop"] == pytest.approx(0.02)
    assert ok["thresholds"]["int8_max_jf_drop"] == 0.03 and "accuracy drop" in ok["thresholds"]["criterion"]
    assert "mean IoU 0.5000" in ok["gate"]["measured"]
    with pytest.raises(ExportGateError, match=r"drop \+0\.0600 > 0\.03.*try: calibrate on frames like yours"):
        _pipeline_gate(config, _verification(0.80, 0.74, mean_iou=0.99))


def test_without_ground_truth_the_gate_decides_on_agreement(tmp_path):
    config = ExportConfig(checkpoint=tmp_path / "c.pth", out_dir=tmp_path / "o", precision="fp16")
    with pytest.raises(ExportGateError, match=r"mean IoU 0\.9000 < 0\.95 \(no ground truth.*try: keep the key encoder"):
        _pipeline_gate(config, _verification(None, None, mean_iou=0.90))
    passed = _verification(None, None, mean_iou=0.96)
    _pipeline_gate(config, passed)
    assert passed["gate"]["passed"] and passed["thresholds"]["fp16_min_iou"] == 0.95


class _ShiftedBackend:
    """The torch backend with the mask autoencoder's object probabilities rolled by a few
    key cells: a candidate that is measurably wrong."""

    def __init__(self, inner: TorchBackend) -> None:
        self.inner = inner
        self.name, self.device, self.precision = "shifted", inner.device, inner.precision

    def encode_key(self, image):
        return self.inner.encode_key(image)

    def segment(self, image, features, coarse):
        prob = self.inner.segment(image, features, coarse)
        return torch.roll(prob, shifts=(prob.shape[-2] // 4, prob.shape[-1] // 4), dims=(-2, -1))


def test_pipeline_agreement_runs_the_candidate_not_the_reference(seeded_small_checkpoint):
    """A gate that built the candidate from the reference would report 1.0 here."""
    model = load_checkpoint(seeded_small_checkpoint).model
    reference = TorchBackend(model, "cpu", "fp32")
    clip = synthetic_clip(5, 64, 112, seed=3, objects=2)
    same = pipeline_agreement(reference, TorchBackend(model, "cpu", "fp32"), clip, SessionConfig(size=-1))
    assert same.mean_iou == 1.0 and same.jf_reference == same.jf_candidate
    shifted = pipeline_agreement(reference, _ShiftedBackend(reference), clip, SessionConfig(size=-1))
    assert shifted.mean_iou < 0.9 and shifted.pixel_agreement < 0.99


def _synthetic_frames(tmp_path):
    from PIL import Image

    clip = synthetic_clip(4, 80, 128, seed=5, objects=2)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return folder


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_a_refused_export_exits_1_says_what_to_try_and_writes_nothing(precision, small_checkpoint, tmp_path):
    """The refusal path through the command line: the candidate must agree with PyTorch
    exactly (--min-iou 1.0) on frames without ground truth, which fp16/int8 graphs of the
    small preset with rule weights do not (a gate comparing PyTorch with PyTorch would
    pass and exit 0)."""
    frames = _synthetic_frames(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "export.cli", str(small_checkpoint), "--out", str(out), "--precision", precision,
           "--calibration", str(frames), "--calibration-frames", "3", "--verify-frames", str(frames),
           "--verify-max-frames", "4", "--work-size", str(WORK_SIZE), "--min-iou", "1.0", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("stmae-export: error: parity gate failed:")
    assert "< 1.0 (no ground truth" in lines[0] and "try:" in lines[0] and lines[0].endswith("nothing was written")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
