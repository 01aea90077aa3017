"""stmae-bench: it runs, its report has every field, and both sides see the same inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from runtime.bench import harness
from runtime.bench.baseline import dense_topk_readout
from runtime.bench.cli import main as bench_main
from runtime.bench.stats import STAGES
from stmae.readout import readout

RUN_FIELDS = {
    "name", "backend", "precision", "objects", "frames", "height", "width", "input_size", "fps",
    "fps_x_objects", "speedup_vs_baseline", "mask_miou_vs_reference", "frame_ms", "stages",
    "gflop_per_frame", "achieved_gflops", "peak_memory_mb", "peak_rss_mb", "peak_cuda_mb",
    "drift_last100_over_first100", "drift_last100_after_window_full", "window_full_from_frame", "backend_settings", "per_frame_ms",
}


def test_dense_baseline_readout_equals_runtime_readout():
    g = torch.Generator().manual_seed(0)
    keys, query = torch.randn(16, 50, generator=g), torch.randn(16, 12, generator=g)
    values = torch.rand(2, 50, generator=g)
    dense = dense_topk_readout(keys, values, query, 7)
    assert torch.allclose(dense, readout(keys[None], values[None], query[None], 7)[0], atol=1e-6)


def test_bench_report_has_every_field_and_same_inputs(seeded_small_checkpoint, tmp_path, monkeypatch, capsys):
    reads: list[str] = []
    real_read = harness.read_rgb

    def recording_read(path):
        rgb = real_read(path)
        reads.append(hashlib.sha1(rgb.tobytes()).hexdigest())
        return rgb

    monkeypatch.setattr(harness, "read_rgb", recording_read)
    out = tmp_path / "report"
    code = bench_main([
        "--checkpoint", str(seeded_small_checkpoint), "--sizes", "48", "--objects", "2", "--frames", "6",
        "--warmup", "2", "--run", "torch:fp32", "--repeats", "2", "--out", str(out),
    ])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert md.count("| torch fp32 |") == 1
    # GFLOP per stage and achieved GFLOP/s are in the markdown table, as the README says.
    assert "GFLOP/frame (key / readout / mask)" in md and "achieved GFLOP/s" in md
    assert "median of 2 interleaved run(s)" in md
    assert (out / "report.png").stat().st_size > 1000
    assert set(report) >= {"command", "environment", "runs", "peak_gflops", "checkpoint"}
    assert report["environment"]["logical_cores"] >= 1 and report["environment"]["versions"]["torch"]
    assert report["peak_gflops"]["fp32"] > 0
    base, ours = report["runs"]
    for run in (base, ours):
        assert RUN_FIELDS <= set(run), RUN_FIELDS - set(run)
        assert set(run["stages"]) == set(STAGES)
        assert run["fps"] > 0 and run["peak_rss_mb"] > 0
        assert len(run["per_frame_ms"]) == 6
        assert run["objects"] == 2 and run["gflop_per_frame"]["mask_autoencoder"] > 0
    assert base["speedup_vs_baseline"] == 1.0
    assert ours["speedup_vs_baseline"] == pytest.approx(ours["fps"] / base["fps"])
    # Repeats: two interleaved runs each, median and min reported.
    for run in (base, ours):
        assert len(run["fps_runs"]) == 2 and run["fps_min"] == pytest.approx(min(run["fps_runs"]), abs=1e-3)
        assert run["fps"] == pytest.approx(run["fps_min"])  # the median run of two: the lower one
    # Same inputs: every run decoded the identical frame sequence, same padded size.
    assert len(reads) == 24 and reads[:6] == reads[6:12] == reads[12:18] == reads[18:]
    assert (base["height"], base["width"]) == (ours["height"], ours["width"])
    # The torch session computes the published schedule exactly as the baseline.
    assert ours["mask_miou_vs_reference"] == pytest.approx(1.0)


def test_a_spread_larger_than_the_reported_difference_warns():
    from runtime.bench.suite import _repeat_stats

    def runs(*fps):
        return [SimpleNamespace(fps=f) for f in fps]

    noisy = _repeat_stats(runs(1.0, 1.5, 1.2), runs(1.0, 1.1, 1.05), is_baseline=False)
    assert noisy["speedup_vs_baseline"] == pytest.approx(1.2 / 1.05)
    assert noisy["fps_min"] == 1.0 and noisy["fps_median"] == 1.2
    assert "exceeds" in noisy["spread_warning"]  # spread 42 % > 14 % difference
    clear = _repeat_stats(runs(3.0, 3.1, 3.05), runs(1.0, 1.02, 1.01), is_baseline=False)
    assert "spread_warning" not in clear and clear["speedup_vs_baseline"] == pytest.approx(3.05 / 1.01)
    assert "one run only" in _repeat_stats(runs(2.0), runs(1.0), is_baseline=False)["spread_warning"]


def test_mean_iou_and_drift():
    a = [np.zeros((4, 4), np.uint8), np.array([[1, 1], [0, 0]], np.uint8)]
    b = [np.zeros((4, 4), np.uint8), np.array([[1, 0], [0, 0]], np.uint8)]
    assert harness.mean_iou(a, b) == pytest.approx(0.5)
    assert harness.drift_ratio([1.0] * 100) is None
    assert harness.drift_ratio([5.0] + [1.0] * 100 + [1.2] * 100) == pytest.approx(1.2)
    times = [5.0] + [0.5] * 100 + [1.0] * 100 + [1.1] * 100
    assert harness.drift_ratio(times, start=101) == pytest.approx(1.1)
    assert harness.drift_ratio(times[:250], start=101) is None


def test_bench_cli_bad_input_is_one_line(tmp_path):
    exe = Path(sys.executable).with_name("stmae-bench")
    proc = subprocess.run(
        [str(exe), "--run", "onnxruntime", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "needs an export folder" in proc.stderr and "Traceback" not in proc.stderr
