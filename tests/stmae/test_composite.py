"""Composited multi-object clips: exact masks in every frame, occlusion by paste order,
base objects under pasted ones."""

from __future__ import annotations

import numpy as np

from stmae.composite import Donor, composite_clip

H, W, T = 60, 80, 6
BASE, COLOURS = (10, 20, 30), [(250, 0, 0), (0, 250, 0), (0, 0, 250)]


def _donor(colour, name, shape=(40, 30)) -> Donor:
    image = np.zeros((50, 50, 3), np.uint8)
    image[:] = colour  # the whole donor image is one colour: pasted pixels are exactly it
    mask = np.zeros((50, 50), bool)
    yy, xx = np.mgrid[:50, :50]
    mask[((yy - 25) / (shape[0] / 2)) ** 2 + ((xx - 25) / (shape[1] / 2)) ** 2 <= 1] = True
    return Donor(image, mask, name)


def _base_frames():
    return [np.full((H, W, 3), BASE, np.uint8) for _ in range(T)]


def test_pasted_masks_are_exact_in_every_frame():
    rng = np.random.default_rng(3)
    donors = [_donor(c, f"d{i}") for i, c in enumerate(COLOURS)]
    clip = composite_clip(rng, _base_frames(), None, donors)
    assert clip.frames.shape == (T, H, W, 3) and clip.pasted_masks.shape == (T, H, W)
    assert clip.base_objects == 0 and np.array_equal(clip.first_labels, clip.pasted_masks[0])
    for t in range(T):
        for label, name in enumerate(clip.names, start=1):
            colour = COLOURS[int(name[1])]
            where = clip.pasted_masks[t] == label
            assert np.all(clip.frames[t][where] == colour)  # the mask covers exactly its pixels
            others = ~where & (clip.pasted_masks[t] > 0)
            assert not np.any(np.all(clip.frames[t][others] == colour, axis=-1))
        background = clip.pasted_masks[t] == 0
        assert np.all(clip.frames[t][background] == BASE)


def test_objects_move_change_scale_and_occlude():
    areas, occluded = [], False
    for seed in range(10):
        rng = np.random.default_rng(seed)
        clip = composite_clip(rng, _base_frames(), None, [_donor(COLOURS[0], "d0"), _donor(COLOURS[1], "d1")])
        if clip.num_objects < 2:
            continue
        a = [(clip.pasted_masks[t] == 1).sum() for t in range(T)]
        b = [(clip.pasted_masks[t] == 2).sum() for t in range(T)]
        areas.append((a, b))
        # occlusion: object 1 loses area behind object 2 in some frame (its own area
        # changes smoothly with scale otherwise)
        alone = composite_clip(np.random.default_rng(seed), _base_frames(), None, [_donor(COLOURS[0], "d0")])
        full = [(alone.pasted_masks[t] == 1).sum() for t in range(T)]
        occluded |= any(x < y for x, y in zip(a, full))
    assert areas, "no seed kept both objects visible in frame 0"
    assert occluded, "the paths never made the second object pass in front of the first"
    a, _ = areas[0]
    assert a[0] != a[-1]  # scale changes
    centres = [np.argwhere(composite_clip(np.random.default_rng(0), _base_frames(), None,
                                          [_donor(COLOURS[0], "d0")]).pasted_masks[t] == 1).mean(0)
               for t in (0, T - 1)]
    assert np.linalg.norm(centres[0] - centres[1]) > 2  # it moves


def test_base_objects_keep_their_labels_under_the_pasted_ones():
    base = np.zeros((H, W), np.uint8)
    base[:, : W // 2] = 1
    base[0, 0] = 255  # void is not an object
    clip = composite_clip(np.random.default_rng(1), _base_frames(), base, [_donor(COLOURS[2], "d2")])
    assert clip.base_objects == 1
    pasted = clip.pasted_masks[0] > 0
    assert np.all(clip.first_labels[pasted] == 2)
    assert np.all(clip.first_labels[~pasted & (base == 1)] == 1)
    assert clip.first_labels[0, 0] in (0, 2)


def test_a_donor_hidden_in_frame_0_is_not_labelled():
    big = Donor(np.full((50, 50, 3), 9, np.uint8), np.ones((50, 50), bool), "cover")
    rng = np.random.default_rng(0)
    clip = composite_clip(rng, _base_frames(), None, [_donor(COLOURS[0], "small", (10, 10)), big])
    # every kept label is visible in frame 0, labels are contiguous
    labels = sorted(set(np.unique(clip.first_labels).tolist()) - {0})
    assert labels == list(range(1, clip.num_objects + 1)) and len(clip.names) == clip.num_objects
