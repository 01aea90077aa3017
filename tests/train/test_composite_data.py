"""Training data for multi-object, colour-robust models: composite clips open only
first-frame masks; colour-shortcut augmentations; pinned clip batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import train.clips as clips
from train.augment import colour_shortcut_clip, hue_rotation
from train.clips import ClipBatch, ClipRequest, OneShotClips

from .conftest import tiny_data, write_video_folder

def test_composite_clips_open_only_first_frame_masks(tmp_path, monkeypatch):
    root = write_video_folder(tmp_path / "davis", {"alpha": 6, "beta": 5, "gamma": 7}, objects=1)
    opened = []
    real = clips.read_labels
    monkeypatch.setattr(clips, "read_labels", lambda p: (opened.append(p), real(p))[1])
    ds = OneShotClips(tiny_data(davis_roots=(str(root),), davis_resolution="240p", num_frames=4,
                                synthetic_clips=0, composite_clips=6, max_objects=3, repeats=1),
                      seed=0, max_gap=lambda e: 2)
    assert len(ds) == 3 + 6
    multi = 0
    for i in range(3, 9):
        sample = ds[ClipRequest(0, i)]
        assert sample.name.startswith("composite-")
        assert sample.labels.max() == sample.num_objects <= 3
        multi += sample.num_objects >= 2
    assert multi >= 3, "composite clips should mostly hold several objects"
    assert opened and all(p.name == "00000.png" for p in opened)

def test_hue_rotation_keeps_grey_and_moves_red():
    m = hue_rotation(120)
    assert np.allclose(m @ np.array([100, 100, 100]), 100, atol=1e-3)
    red = m @ np.array([200.0, 0, 0])
    assert red.argmax() != 0  # red is no longer red
    assert np.allclose(hue_rotation(0), np.eye(3), atol=1e-6)

def test_colour_shortcut_augmentation_is_per_clip_and_off_by_default():
    frames = [np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8) for i in range(3)]
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert colour_shortcut_clip(frames, rng, 0.0, 0.0, 0.0) is frames
    assert rng.bit_generator.state == state  # off: no randomness drawn, old recipes unchanged
    out = colour_shortcut_clip(frames, np.random.default_rng(1), 0.0, 1.0, 0.0)
    perm = [int(np.argmax([np.array_equal(out[0][..., c], frames[0][..., k]) for k in range(3)])) for c in range(3)]
    for f, o in zip(frames, out):  # the same permutation for every frame of the clip
        assert all(np.array_equal(o[..., c], f[..., perm[c]]) for c in range(3))
    grey = colour_shortcut_clip(frames, np.random.default_rng(1), 0.0, 0.0, 1.0)
    assert all(np.abs(g.astype(int)[..., 0] - g[..., 2]).max() <= 1 for g in grey)

def test_pin_memory_is_used_by_the_data_loader_for_clip_batches(monkeypatch):
    from torch.utils.data._utils import pin_memory as pin

    batch = ClipBatch(torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 1, 4, 4), torch.ones(1, 1, dtype=torch.bool), ("a",))
    called = []
    monkeypatch.setattr(ClipBatch, "pin_memory", lambda self: (called.append(True), self)[1])
    pin.pin_memory(batch)
    assert called, "the DataLoader's pinning does not reach ClipBatch"

@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs a CUDA device")
def test_pin_memory_pins_every_tensor():
    batch = ClipBatch(torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 1, 4, 4), torch.ones(1, 1, dtype=torch.bool), ("a",))
    pinned = batch.pin_memory()
    assert pinned.frames.is_pinned() and pinned.first_masks.is_pinned() and pinned.valid.is_pinned()
