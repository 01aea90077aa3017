"""Training data: only frame 0's mask is ever opened; DAVIS and YouTube-VOS layouts;
deterministic clips; frame gaps; object selection; batching with absent object slots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import train.clips as clips
from train.clips import ClipRequest, OneShotClips, choose_objects, collate_clips, frame_indices
from train.config import DataConfig
from train.sampler import ResumableDistributedSampler
from train.video_folders import list_videos

from .conftest import tiny_data, write_video_folder


def test_only_the_first_frame_mask_is_opened(tiny_davis, monkeypatch):
    opened = []
    real = clips.read_labels

    def spy(path):
        opened.append(path)
        return real(path)

    monkeypatch.setattr(clips, "read_labels", spy)
    # Every later annotation in tiny_davis is garbage: reading one would raise.
    ds = OneShotClips(tiny_data(davis_roots=(str(tiny_davis),), synthetic_clips=0,
                                davis_resolution="240p", num_frames=4), seed=0,
                      max_gap=lambda e: 3)
    for epoch in range(3):
        for i in range(len(ds)):
            sample = ds[ClipRequest(epoch, i)]
            assert sample.frames.shape == (4, 32, 48, 3) and sample.frames.dtype == np.uint8
            assert sample.labels.shape == (32, 48) and sample.labels.max() == sample.num_objects
    assert opened and all(p.name == "00000.png" for p in opened)


def test_youtube_layout_starts_at_the_first_annotated_frame(tmp_path):
    root = write_video_folder(tmp_path / "ytvos", {"vid": 5}, resolution=None)
    (root / "Annotations" / "vid" / "00000.png").unlink()  # first annotation at frame 1
    (root / "Annotations" / "vid" / "00001.png").write_bytes(
        (tmp_path / "ytvos").joinpath("Annotations/vid/00002.png").read_bytes()
    )
    entries = list_videos(root, None)
    assert [e.name for e in entries] == ["vid"]
    assert entries[0].first_annotation.name == "00001.png"
    assert [p.stem for p in entries[0].frames] == ["00001", "00002", "00003", "00004"]


def test_sequences_and_exclusions(tiny_davis):
    names = [e.name for e in list_videos(tiny_davis, "240p", exclude=("beta",))]
    assert names == ["alpha", "gamma"]
    assert [e.name for e in list_videos(tiny_davis, "240p", sequences=("gamma",))] == ["gamma"]
    with pytest.raises(ValueError, match="not in"):
        list_videos(tiny_davis, "240p", sequences=("nope",))
    with pytest.raises(ValueError, match="DAVIS layout"):
        list_videos(tiny_davis, "480p")


def test_clips_are_a_function_of_seed_epoch_index():
    ds = OneShotClips(tiny_data(synthetic_clips=3), seed=7, max_gap=lambda e: 2)
    a, b = ds[ClipRequest(1, 2)], ds[ClipRequest(1, 2)]
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.frames, ds[ClipRequest(2, 2)].frames)


def test_frame_indices_follow_the_gap_limit():
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = frame_indices(rng, 40, 8, 3)
        gaps = np.diff(idx)
        assert idx[0] == 0 and len(idx) == 8 and gaps.min() >= 1 and gaps.max() <= 3
    assert frame_indices(rng, 10, 8, 25)[-1] <= 9  # the gap shrinks to fit the video
    assert frame_indices(rng, 3, 5, 4) == [0, 1, 2, 2, 2]  # too short: repeat the last


def test_choose_objects_keeps_at_most_max_and_ignores_void():
    labels = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    out = choose_objects(np.random.default_rng(0), labels, 3)
    assert sorted(np.unique(out).tolist()) == [0, 1, 2, 3] and out[1, 2] == 0


def test_collate_pads_absent_objects():
    ds = OneShotClips(tiny_data(synthetic_clips=8, max_objects=3), seed=1, max_gap=lambda e: 2)
    samples = [ds[ClipRequest(0, i)] for i in range(8)]
    batch = collate_clips(samples)
    n = max(s.num_objects for s in samples)
    assert batch.frames.shape == (8, 3, 3, 32, 48) and batch.frames.dtype == torch.float32
    assert batch.first_masks.shape == (8, n, 32, 48)
    assert batch.valid.tolist() == [[i < s.num_objects for i in range(n)] for s in samples]
    assert torch.all(batch.first_masks.sum(1) <= 1)  # one-hot
    absent = ~batch.valid
    assert torch.all(batch.first_masks[absent] == 0)


def test_sampler_splits_ranks_and_resumes_mid_epoch():
    parts = [ResumableDistributedSampler(10, 2, r, seed=4) for r in range(2)]
    for p in parts:
        p.set_epoch(3)
    a, b = (list(p) for p in parts)
    assert len(a) == len(b) == 5 and not {r.index for r in a} & {r.index for r in b}
    parts[0].set_epoch(3, start=2)
    assert list(parts[0]) == a[2:]
    with pytest.raises(ValueError, match="cannot be shared"):
        ResumableDistributedSampler(1, 2, 0)


def test_data_config_validation():
    with pytest.raises(ValueError, match="no training data"):
        DataConfig()
    with pytest.raises(ValueError, match="multiples of 16"):
        DataConfig(synthetic_clips=1, crop_size=(30, 48))
    with pytest.raises(ValueError, match="num_frames"):
        DataConfig(synthetic_clips=1, num_frames=1)
    with pytest.raises(ValueError, match="both selected and excluded"):
        DataConfig(synthetic_clips=1, sequences=("a",), exclude_sequences=("a",))
