"""evaluate_sequences on a small DAVIS-layout dataset: CSV, predictions on disk, scores
equal to vos-benchmark's on the written PNGs, refusal to overwrite, split reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.backends import TorchBackend
from runtime.config import SessionConfig
from runtime.errors import InputError
from runtime.evaluation import evaluate_sequences, read_split
from runtime.io.mask_io import read_mask, write_mask
from stmae import generate_clip
from stmae.outputs import write_record

from .conftest import write_frames


def make_davis(root: Path, names=("alpha", "beta"), frames=6, resolution="480p") -> Path:
    for i, name in enumerate(names):
        clip = generate_clip(frames=frames, height=48, width=64, objects=1 + i, seed=10 + i)
        write_frames(root / "JPEGImages" / resolution / name, clip.frames)
        ann = root / "Annotations" / resolution / name
        ann.mkdir(parents=True)
        for t, m in enumerate(clip.masks):
            write_mask(ann / f"{t:05d}.png", m)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def test_evaluate_writes_predictions_and_scores(tmp_path, small_model):
    root = make_davis(tmp_path / "davis")
    out = tmp_path / "out"
    out.mkdir()
    backend = TorchBackend(small_model)
    seen = []
    result = evaluate_sequences(backend, root, read_split(root, "val"), "480p", out,
                                SessionConfig(size=-1), on_frame=lambda s, i: seen.append((s, i)))
    assert [s.name for s in result.sequences] == ["alpha", "beta"]
    assert len(seen) == 12
    assert [len(s.objects) for s in result.sequences] == [1, 2]
    for seq in ("alpha", "beta"):
        files = sorted(p.name for p in (out / seq).iterdir())
        assert files == [f"{t:05d}.png" for t in range(6)]
        first, _ = read_mask(out / seq / "00000.png")
        gt, _ = read_mask(root / "Annotations" / "480p" / seq / "00000.png")
        assert np.array_equal(first, gt)
    all_objects = [o for s in result.sequences for o in s.objects]
    assert result.J == pytest.approx(np.mean([o.J for o in all_objects]))
    assert result.summary_line().startswith("J&F 0.") or result.summary_line().startswith("J&F 1.")
    text = result.csv_text().splitlines()
    assert text[0] == "sequence,J,F,J&F" and text[1].startswith("alpha,") and len(text) == 3

    # The same scores as vos-benchmark computes from the PNGs on disk.
    vb = pytest.importorskip("vos_benchmark.benchmark", reason="vos-benchmark is not installed")
    for seq in result.sequences:
        name, iou, bf = vb.VideoEvaluator(str(root / "Annotations" / "480p"), str(out))(seq.name)
        for obj in seq.objects:
            assert abs(obj.J - iou[obj.label] / 100) < 1e-3
            assert abs(obj.F - bf[obj.label] / 100) < 1e-3


def test_evaluate_refuses_existing_masks_and_limits_frames(tmp_path, small_model):
    root = make_davis(tmp_path / "davis", names=("alpha",))
    out = tmp_path / "out"
    (out / "alpha").mkdir(parents=True)
    write_mask(out / "alpha" / "00000.png", np.zeros((48, 64), np.uint8))
    backend = TorchBackend(small_model)
    with pytest.raises(InputError, match="already has 1 mask.*--overwrite"):
        evaluate_sequences(backend, root, ["alpha"], "480p", out, SessionConfig(size=-1))
    # Not written by stmae-eval (no record): not replaced even with overwrite.
    with pytest.raises(InputError, match="replaces only results that stmae-eval wrote"):
        evaluate_sequences(backend, root, ["alpha"], "480p", out, SessionConfig(size=-1), overwrite=True)
    write_record(out, "stmae-eval")
    result = evaluate_sequences(backend, root, ["alpha"], "480p", out, SessionConfig(size=-1),
                                overwrite=True, max_frames=4)
    assert result.sequences[0].frames == 4 and result.sequences[0].objects[0].frames == 2


def test_split_and_layout_errors(tmp_path, small_model):
    root = make_davis(tmp_path / "davis", names=("alpha",))
    assert read_split(root, "val") == ["alpha"]
    assert read_split(root, "val", "2017") == ["alpha"]
    with pytest.raises(InputError, match=r"split 'test' not found"):
        read_split(root, "test")
    backend = TorchBackend(small_model)
    with pytest.raises(InputError, match=r"sequence 'zeta'.*does not exist.*--resolution"):
        evaluate_sequences(backend, root, ["zeta"], "480p")
    with pytest.raises(InputError, match="not a DAVIS root"):
        evaluate_sequences(backend, tmp_path, ["alpha"], "480p")
