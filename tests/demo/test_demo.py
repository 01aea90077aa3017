"""stmae-demo end to end through its command line, at a tiny size: the report, a browser-
playable overlay of exactly the clip's size, a contact sheet with ground truth beside the
prediction, the export cache, and no stale outputs mixed with new ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2

from runtime.io.overlay import probe_video

REPORT_FIELDS = {
    "kind", "checkpoint", "checkpoint_sha256", "backend", "precision", "device", "input", "ground_truth", "frames",
    "frame_size", "processed_shorter_side", "processed_size_source", "mem_every", "objects", "export", "fps_end_to_end",
    "stages_ms", "stage_fps", "scores", "contact_sheet_frames", "files", "written", "wall_seconds",
}
ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"STMAE_CACHE_DIR": str(cache)} if cache else {})}
    return subprocess.run([sys.executable, "-m", "demo.cli", *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)


def test_demo_runs_reports_and_reuses_export(seeded_small_checkpoint, tmp_path):
    out, cache = tmp_path / "demo", tmp_path / "cache"
    args = ("--checkpoint", str(seeded_small_checkpoint), "--out", str(out), "--objects", "2", "--size", "48")
    first = _demo(*args, "--frames", "8", cache=cache)
    assert first.returncode == 0, first.stderr[-2000:]
    lines = first.stdout.strip().splitlines()
    assert lines[0].startswith("masks:") and "contact sheet:" in first.stdout
    assert "J&F" in lines[-3] and "2 objects, 85x48 processed at 48 (--size)" in lines[-3]
    assert "frames/s end to end" in lines[-2]
    assert "exporting" in first.stderr and "reusing" not in first.stderr
    report = json.loads((out / "report.json").read_text())
    assert REPORT_FIELDS <= set(report), REPORT_FIELDS - set(report)
    assert report["backend"] == "onnxruntime" and report["export"]["reused_cache"] is False
    assert report["frames"] == 8 and report["objects"] == 2
    assert report["mem_every"] == 5  # the checkpoint records none: the published schedule
    assert 0.0 <= report["scores"]["J&F"] <= 1.0 and report["ground_truth"] == "the synthetic clip's exact masks"
    assert {"key_encoder", "memory_readout", "mask_autoencoder"} <= set(report["stages_ms"])
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(8)]
    # The overlay is VP9 (browsers play it) at exactly the clip's size, every frame.
    assert probe_video(out / "overlay.webm") == {"codec": "vp9", "width": 85, "height": 48, "frames": 8,
                                                 "original_size": (85, 48)}
    # The contact sheet pairs ground truth with prediction (two tiles per frame) + legend.
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[1] == 2 * (2 * 320 + 4) and sheet.shape[0] == 4 * (181 + 4) + 56
    assert "![contact sheet](contact_sheet.png)" in (out / "report.md").read_text()

    # Second run, shorter clip: the export is reused (and said so only once), the 8 old
    # masks are gone, and a file that is not the demo's is left alone.
    (out / "notes.txt").write_text("mine")
    # the export lives in the user cache that stmae-segment's CPU default shares, not in --out
    (cached,) = [p for p in (cache / "exports").iterdir() if p.is_dir()]
    assert cached.name.endswith("-fp32") and not (out / "export_fp32").exists()
    manifest_mtime = (cached / "manifest.json").stat().st_mtime_ns
    second = _demo(*args, "--frames", "5", cache=cache)
    assert second.returncode == 0, second.stderr[-2000:]
    again = json.loads((out / "report.json").read_text())
    assert again["export"]["reused_cache"] is True
    assert (cached / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert "export reused from cache" in second.stdout and "exporting" not in second.stderr
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    assert probe_video(out / "overlay.webm")["frames"] == 5
    assert (out / "notes.txt").read_text() == "mine"


def test_masks_the_demo_did_not_write_are_refused(seeded_small_checkpoint, tmp_path):
    out = tmp_path / "demo"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "00000.png").write_bytes(b"not the demo's")
    proc = _demo("--checkpoint", str(seeded_small_checkpoint), "--out", str(out), "--frames", "4", "--size", "48",
                 "--backend", "torch")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "not written by stmae-demo" in proc.stderr
    assert (out / "masks" / "00000.png").read_bytes() == b"not the demo's"


def test_demo_bad_input_is_one_line(tmp_path):
    proc = _demo("--input", str(tmp_path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--input and --mask go together" in proc.stderr
