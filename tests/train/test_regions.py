"""Region clips: self-made colour-region labels on any frame, never an annotation file."""

from __future__ import annotations

import numpy as np
import pytest

import train.clips as clips
from train.clips import ClipRequest, OneShotClips
from train.regions import MAX_AREA, MIN_AREA, region_labels

from .conftest import tiny_data, write_video_folder


def _blocks() -> tuple[np.ndarray, np.ndarray]:
    """A grey 120x160 frame with three flat colour blocks; returns (image, block ids 0..3)."""
    image = np.full((120, 160, 3), 128, np.uint8)
    ids = np.zeros((120, 160), np.uint8)
    for k, (y, x, colour) in enumerate([(10, 10, (220, 30, 30)), (60, 90, (30, 200, 40)), (15, 100, (40, 40, 210))], 1):
        image[y:y + 40, x:x + 50] = colour
        ids[y:y + 40, x:x + 50] = k
    return image, ids


def test_regions_follow_colour_edges_and_sizes():
    image, ids = _blocks()
    found = 0
    for seed in range(6):
        labels = region_labels(np.random.default_rng(seed), image, 3)
        assert labels.dtype == np.uint8 and labels.shape == ids.shape
        for k in range(1, int(labels.max()) + 1):
            region = labels == k
            assert MIN_AREA <= region.mean() <= MAX_AREA
            # a region lies within one flat area: its pixels are (almost) all one block id
            purity = np.bincount(ids[region], minlength=4).max() / region.sum()
            assert purity > 0.95, f"seed {seed}: region {k} straddles colours (purity {purity:.2f})"
            found += 1
    assert found >= 6


def test_regions_are_a_function_of_the_rng_and_empty_on_a_flat_frame():
    image, _ = _blocks()
    a = region_labels(np.random.default_rng(3), image, 2)
    b = region_labels(np.random.default_rng(3), image, 2)
    assert np.array_equal(a, b) and 1 <= a.max() <= 2
    flat = np.full((64, 96, 3), 90, np.uint8)
    assert not region_labels(np.random.default_rng(0), flat, 3).any()
    with pytest.raises(ValueError):
        region_labels(np.random.default_rng(0), image, 0)


def test_region_clips_open_no_annotation(tmp_path, monkeypatch):
    root = write_video_folder(tmp_path / "davis", {"alpha": 9, "beta": 8}, objects=1, size=(96, 128))
    opened, frames_read = [], []
    real_rgb = clips.read_rgb
    monkeypatch.setattr(clips, "read_labels", lambda p: opened.append(p))
    monkeypatch.setattr(clips, "read_rgb", lambda p: (frames_read.append(p), real_rgb(p))[1])
    ds = OneShotClips(tiny_data(davis_roots=(str(root),), davis_resolution="240p", num_frames=3,
                                synthetic_clips=0, composite_clips=0, region_clips=8, repeats=1,
                                max_objects=2, crop_size=(64, 64)),
                      seed=0, max_gap=lambda e: 2)
    assert len(ds) == 2 + 8
    labelled = 0
    starts = set()
    for i in range(2, 10):
        sample = ds[ClipRequest(0, i)]
        assert sample.name.startswith("regions-")
        assert sample.labels.max() == sample.num_objects <= 2
        labelled += sample.num_objects > 0
        starts.add(int(sample.name.rsplit("-", 1)[1]))
    assert opened == [], "region clips must not read any annotation"
    assert all("JPEGImages" in str(p) for p in frames_read)
    assert labelled >= 6
    assert starts - {0}, "region clips should start at frames other than 0"
