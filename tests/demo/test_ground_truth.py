"""stmae-demo --input ... --gt DIR: your video scored against its annotations (DAVIS
layout), and a --gt folder that lacks a frame's annotation refused before anything runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from demo.cli import main as demo_main
from demo.pipeline import default_checkpoint
from runtime.io.mask_io import read_mask
from runtime.metrics import evaluate_objects
from tests.conftest import davis_root

FRAMES = 5


def _run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = demo_main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_gt_scores_your_video_as_runtime_metrics_does(tmp_path, capsys):
    images, annotations = davis_root() / "JPEGImages" / "240p" / "bear", davis_root() / "Annotations" / "240p" / "bear"
    if not (images.is_dir() and annotations.is_dir()):
        pytest.skip(f"the shared DAVIS 2016 240p data is not at {davis_root()} (set STMAE_SHARED_DIR)")
    frames = tmp_path / "bear"
    frames.mkdir()
    for path in sorted(images.glob("*.jpg"))[:FRAMES]:
        shutil.copy(path, frames / path.name)
    out = tmp_path / "demo"
    # --gt is the full annotation folder: annotations of frames the input lacks are not read.
    code, stdout, err = _run(capsys, "--input", frames, "--mask", annotations / "00000.png", "--gt", annotations,
                             "--out", out, "--backend", "torch", "--size", 120, "--checkpoint", default_checkpoint())
    assert code == 0, err[-2000:]
    report = json.loads((out / "report.json").read_text())
    names = [f"{i:05d}" for i in range(FRAMES)]
    predictions = [read_mask(out / "masks" / f"{n}.png")[0] for n in names]
    truth = [read_mask(annotations / f"{n}.png")[0] for n in names]
    expected = float(np.mean([o.JF for o in evaluate_objects(predictions, truth)]))
    assert report["scores"] is not None and report["ground_truth"] == str(annotations)
    assert report["scores"]["J&F"] == pytest.approx(expected, abs=1e-9)
    assert expected > 0.2  # the shipped model follows the bear: a real score, not an empty one
    assert f"J&F {expected:.4f}" in stdout and "n/a" not in stdout


def test_gt_without_every_frames_annotation_is_refused_up_front(tmp_path, capsys, seeded_small_checkpoint):
    frames, gt = tmp_path / "frames", tmp_path / "gt"
    frames.mkdir(), gt.mkdir()
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 10:30] = 1
    for i in range(4):
        Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(frames / f"f{i:03d}.png")
        if i != 2:  # frame f002 has no annotation
            Image.fromarray(mask).save(gt / f"f{i:03d}.png")
    out = tmp_path / "demo"
    code, _, err = _run(capsys, "--input", frames, "--mask", gt / "f000.png", "--gt", gt, "--out", out,
                        "--backend", "torch", "--checkpoint", seeded_small_checkpoint)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("stmae-demo: error: --gt ") and "no annotation for 1 of the 4 frames (first: f002.png)" in err
    assert not (out / "masks").exists()  # refused before any frame was segmented
    # The output never goes into the annotations (the output gate knows --gt as an input).
    (gt / "f002.png").write_bytes((gt / "f001.png").read_bytes())
    before = sorted(p.name for p in gt.iterdir())
    code, _, err = _run(capsys, "--input", frames, "--mask", gt / "f000.png", "--gt", gt, "--out", gt / "out",
                        "--backend", "torch", "--checkpoint", seeded_small_checkpoint)
    assert code == 2 and err.count("\n") == 1 and "--gt" in err, err
    assert sorted(p.name for p in gt.iterdir()) == before
    # --gt scores your video; the synthetic clip has its own exact masks.
    code, _, err = _run(capsys, "--gt", gt, "--out", tmp_path / "other", "--backend", "torch")
    assert code == 2 and err.count("\n") == 1 and "--gt goes with --input" in err
