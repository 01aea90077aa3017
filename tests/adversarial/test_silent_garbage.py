"""Class 2, silent garbage: what cannot be right is refused (exit 2, one line) or, for
16-bit frames, converted exactly; a diverging training run stops without saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.cli import segment_main
from runtime.io.frames import FrameFolder
from runtime.io.mask_io import read_mask
from stmae import STMAE, CheckpointError, load_checkpoint, preset, save_checkpoint
from train import loop
from train.cli import main as train_main

from .conftest import one_line_error, run_main, snapshot


def test_jpeg_mask_is_refused(tmp_path, video, clip, seg_args, capsys):
    frames, _ = video
    jpeg = tmp_path / "first.jpg"
    Image.fromarray((clip.masks[0] * 100).astype(np.uint8)).save(jpeg, quality=90)
    before = snapshot(tmp_path)
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", jpeg, "--out", tmp_path / "o")
    assert code == 2
    one_line_error(err, "stmae-segment", "JPEG file", "save masks as PNG")
    assert snapshot(tmp_path) == before


def test_mask_that_went_through_jpeg_is_refused(tmp_path, video, clip, seg_args, capsys):
    """The reported case: a lossy mask saved as PNG, 30 grey levels -> 29 'objects'."""
    frames, _ = video
    jpeg = tmp_path / "m.jpg"
    Image.fromarray((clip.masks[0] * 100).astype(np.uint8)).save(jpeg, quality=90)
    lossy = tmp_path / "first.png"
    Image.open(jpeg).save(lossy)
    assert len(np.unique(np.asarray(Image.open(lossy)))) > 10
    before = snapshot(tmp_path)
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", lossy, "--out", tmp_path / "o")
    assert code == 2
    one_line_error(err, "stmae-segment", "looks lossy (JPEG) or anti-aliased")
    assert snapshot(tmp_path) == before


def test_clean_masks_with_many_objects_are_not_refused(tmp_path):
    labels = np.zeros((60, 80), np.uint8)
    for i in range(12):  # 12 solid 8x8 objects: every label has interior pixels
        y, x = divmod(i, 4)
        labels[4 + y * 18:12 + y * 18, 4 + x * 18:12 + x * 18] = i + 1
    Image.fromarray(labels).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png")[0], labels)


def test_sixteen_bit_frames_are_converted_exactly(tmp_path, clip, seg_args, capsys):
    """Decision: 16-bit greyscale frames are scaled to 8 bits (value / 257, rounded),
    never clipped to white; 32-bit integer or float images are refused."""
    folder = tmp_path / "frames16"
    folder.mkdir()
    grey8 = clip.frames[..., 1]
    for t, g in enumerate(grey8):
        Image.fromarray(g.astype(np.uint16) * 257).save(folder / f"{t:05d}.png")
    assert Image.open(folder / "00000.png").mode == "I;16"
    got = [frame for _, frame in FrameFolder(folder)]
    assert all(np.array_equal(f[..., c], g) for f, g in zip(got, grey8) for c in range(3))
    mask = tmp_path / "m.png"
    Image.fromarray(clip.masks[0]).save(mask)
    code, out, err = run_main(segment_main, capsys, *seg_args, "--input", folder, "--mask", mask, "--out", tmp_path / "o")
    assert code == 0, err
    assert out.startswith("6 frames, 2 objects")


def test_weights_with_nan_or_inf_are_refused_on_load(tmp_path, video, seg_args, capsys):
    torch.manual_seed(0)
    model = STMAE(preset("small"))
    with torch.no_grad():
        model.decoder.pred.weight[0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pth"
    save_checkpoint(bad, model)
    with pytest.raises(CheckpointError, match="NaN or Inf values.*decoder.pred.weight"):
        load_checkpoint(bad)
    frames, mask = video
    before = snapshot(tmp_path)
    args = [*seg_args, "--input", frames, "--mask", mask, "--out", tmp_path / "o"]
    args[args.index("--checkpoint") + 1] = bad
    code, _, err = run_main(segment_main, capsys, *args)
    assert code == 2
    one_line_error(err, "stmae-segment", "NaN or Inf", "use an earlier checkpoint")
    assert snapshot(tmp_path) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize("lr", ["inf", "nan", "-1"])
def test_non_finite_learning_rate_is_refused(tmp_path, capsys, lr):
    code, _, err = run_main(train_main, capsys, "--synthetic-clips", 2, "--model", "small", "--lr", lr,
                            "--output", tmp_path / "run", "--device", "cpu")
    assert code == 2
    one_line_error(err, "stmae-train", "--lr", "finite number > 0")
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real_loss = loop.cycle_loss
    calls = {"n": 0}

    def loss_that_diverges(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third step's loss is NaN
            terms.total.data.fill_(float("nan"))
        return terms

    monkeypatch.setattr(loop, "cycle_loss", loss_that_diverges)
    run = tmp_path / "run"
    args = ["--synthetic-clips", 4, "--model", "small", "--frames", 3, "--max-objects", 2, "--crop", 32, 48,
            "--batch-size", 2, "--refs", 2, "--steps", 5, "--checkpoint-every", 2, "--log-every", 1,
            "--device", "cpu", "--precision", "fp32", "--output", run, "--no-progress"]
    ckpt = run / "checkpoints" / "last.pth"
    snapshots = []
    real_save = loop.save_training_checkpoint

    def save_and_remember(*a, **k):
        real_save(*a, **k)
        snapshots.append(snapshot(ckpt))

    monkeypatch.setattr(loop, "save_training_checkpoint", save_and_remember)
    code, out, err = run_main(train_main, capsys, *args)
    assert code == 1
    one_line_error(err, "stmae-train", "loss became nan at step 3", "last good checkpoint", "(step 2) was kept")
    assert len(snapshots) == 1 and snapshot(ckpt) == snapshots[0]  # nothing saved after the NaN
    assert torch.load(ckpt, weights_only=True)["it"] == 2
