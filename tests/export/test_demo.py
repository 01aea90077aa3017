"""stmae-demo end to end through the console script, at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path



REPORT_FIELDS = {
    "checkpoint", "checkpoint_sha256", "backend", "precision", "device", "input", "frames",
    "frame_size", "processed_shorter_side", "objects", "export", "fps_end_to_end", "stages_ms",
    "stage_fps", "scores", "contact_sheet_frames", "files", "wall_seconds",
}


def _demo(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("stmae-demo")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)


def test_demo_runs_reports_and_reuses_export(seeded_small_checkpoint, tmp_path):
    out = tmp_path / "demo"
    args = ("--checkpoint", str(seeded_small_checkpoint), "--out", str(out), "--frames", "8", "--size", "48", "--objects", "2")
    first = _demo(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    lines = first.stdout.strip().splitlines()
    assert lines[0].startswith("masks:") and "contact sheet:" in first.stdout
    assert "J&F" in lines[-3] and "frames/s end to end" in lines[-2]
    report = json.loads((out / "report.json").read_text())
    assert REPORT_FIELDS <= set(report), REPORT_FIELDS - set(report)
    assert report["backend"] == "onnxruntime" and report["export"]["reused_cache"] is False
    assert report["frames"] == 8 and report["objects"] == 2
    assert 0.0 <= report["scores"]["J&F"] <= 1.0
    assert {"key_encoder", "memory_readout", "mask_autoencoder"} <= set(report["stages_ms"])
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(8)]
    assert (out / "overlay.mp4").stat().st_size > 0
    assert (out / "contact_sheet.png").stat().st_size > 1000
    assert "![contact sheet](contact_sheet.png)" in (out / "report.md").read_text()

    manifest_mtime = (out / "export_fp32" / "manifest.json").stat().st_mtime_ns
    second = _demo(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    again = json.loads((out / "report.json").read_text())
    assert again["export"]["reused_cache"] is True
    assert (out / "export_fp32" / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert "export reused from cache" in second.stdout


def test_demo_bad_input_is_one_line(tmp_path):
    proc = _demo("--input", str(tmp_path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--input and --mask go together" in proc.stderr
