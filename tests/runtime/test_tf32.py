"""fp32 means IEEE fp32 on CUDA: the torch backend switches TF32 off (cuBLAS products and
cuDNN convolutions) unless asked (--allow-tf32 / options={"tf32": True}); the choice
reaches the backend from stmae-segment, stmae-eval, corpus workers and stmae-bench, and is
recorded in bench reports and export manifests. Checked on the CPU through torch's flags."""

from __future__ import annotations

import json

import pytest
import torch

from runtime.backends import create_backend
from runtime.backends.torch_backend import cuda_tf32_state, set_cuda_tf32
from runtime.bench.cli import main as bench_main
from runtime.cli import eval_main, segment_main
from runtime.corpus.worker_setup import BackendSpec, fingerprint_of
from runtime.errors import BackendUnavailable
from runtime.export_manifest import ExportManifestError, parse_manifest
from stmae import generate_clip

from .conftest import write_frames
from .fake_export import fake_export_manifest

@pytest.fixture(autouse=True)
def _restore_tf32_flags():
    """Put torch's TF32 flags back as they were (they are process-wide)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _torch_flags() -> dict:
    """What torch itself says (the flags torch.compile reads too)."""
    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}


OFF = {"matmul": False, "cudnn": False}
ON = {"matmul": True, "cudnn": True}


def test_backend_turns_tf32_off_unless_allowed(small_checkpoint):
    set_cuda_tf32(True)  # as torch leaves cuDNN convolutions by default, and more
    backend = create_backend("torch", checkpoint=small_checkpoint, device="cpu")
    assert backend.tf32 is False and _torch_flags() == OFF
    assert cuda_tf32_state() == {"matmul": False, "cudnn": False}
    backend = create_backend("torch", checkpoint=small_checkpoint, device="cpu", options={"tf32": True})
    assert backend.tf32 is True and _torch_flags() == ON
    with pytest.raises(BackendUnavailable, match=r"takes the options \['tf32'\], got \['threads'\]"):
        create_backend("torch", checkpoint=small_checkpoint, options={"threads": 2})


@pytest.mark.parametrize("allow", [False, True])
def test_segment_allow_tf32_reaches_the_backend(small_checkpoint, tmp_path, allow):
    clip = generate_clip(frames=2, height=48, width=64, objects=1, seed=3)
    write_frames(tmp_path / "frames", clip.frames)
    from runtime.io.mask_io import write_mask

    write_mask(tmp_path / "mask.png", clip.masks[0])
    set_cuda_tf32(not allow)  # the opposite: the run must set it
    code = segment_main(["--checkpoint", str(small_checkpoint), "--input", str(tmp_path / "frames"),
                         "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "out"), "--size", "48",
                         "--device", "cpu", "--quiet", *(["--allow-tf32"] if allow else [])])
    assert code == 0
    assert _torch_flags() == (ON if allow else OFF)


def test_eval_has_the_option(capsys):
    with pytest.raises(SystemExit):
        eval_main(["--help"])
    assert "--allow-tf32" in capsys.readouterr().out


def test_corpus_workers_get_the_choice(small_checkpoint):
    from runtime.config import SessionConfig

    spec = BackendSpec("torch", str(small_checkpoint), None, "cpu", "fp32", True)
    assert spec.with_device("cpu").tf32 is True
    assert fingerprint_of(spec, SessionConfig(), None)["tf32"] is True
    # IEEE fp32 (the default) leaves the fingerprint of corpora written before the option.
    assert "tf32" not in fingerprint_of(BackendSpec("torch", str(small_checkpoint)), SessionConfig(), None)


def test_bench_records_the_choice(seeded_small_checkpoint, tmp_path):
    out = tmp_path / "streams"
    assert bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "32", "--frames", "3",
                       "--warmup", "1", "--streams", "1", "--sequential", "off", "--pipeline", "on",
                       "--threads", "1", "--allow-tf32", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["tf32"] is True and report["config"]["cuda_tf32_state"] == {"matmul": True, "cudnn": True}
    assert "TF32: allowed (--allow-tf32)" in (out / "report.md").read_text()
    out = tmp_path / "clip"
    assert bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "32", "--frames", "3",
                       "--warmup", "1", "--repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"] == {"tf32": False, "cuda_tf32_state": {"matmul": False, "cudnn": False}}
    assert all(run["backend_settings"]["tf32"] is False for run in report["runs"][1:])
    assert "TF32: off (IEEE float32)" in (out / "report.md").read_text()


def test_export_manifest_records_how_parity_was_measured(tmp_path):
    manifest = fake_export_manifest(tmp_path)
    data = manifest.to_dict()
    assert data["tf32"] is False and parse_manifest(data).tf32 is False
    assert parse_manifest({**data, "tf32": True}).tf32 is True
    older = {k: v for k, v in data.items() if k != "tf32"}
    assert parse_manifest(older).tf32 is False  # written before the field: IEEE fp32 (the gate ran on the CPU)
    with pytest.raises(ExportManifestError, match="tf32 must be true or false, got 'no'"):
        parse_manifest({**data, "tf32": "no"})
