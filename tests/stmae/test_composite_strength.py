"""How far composited objects move, scale and turn (stmae.composite.PathStrength): the
default replays the original paths bit for bit; larger settings move, scale and turn the
objects further."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from stmae.composite import PathStrength, composite_clip, sample_path

from .test_composite import COLOURS, T, _base_frames, _donor

# sha256 (first 16 hex digits) of sample_path's (centre, height, degrees) float64 bytes
# for seeds 0..3 (6 frames, 60x80, aspect 1.3), then of one whole composite clip (frames,
# pasted masks, frame-0 labels; seed 7, a base object and two donors), both computed with
# stmae/composite.py as it was before PathStrength existed (git HEAD of that change).
ORIGINAL_PATHS = ["21c582357e24674b", "ba25e1628e5cdf99", "960773befdc21f35", "f418b6de25dafd0e"]
ORIGINAL_CLIP = "aab177cca5df647b"


def _digest(*arrays: np.ndarray) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()[:16]


def test_default_strength_gives_the_original_paths_and_clips_byte_for_byte():
    for seed, expected in enumerate(ORIGINAL_PATHS):
        path = sample_path(np.random.default_rng(seed), 6, 60, 80, 1.3)
        assert _digest(path.centre, path.height, path.degrees) == expected
        again = sample_path(np.random.default_rng(seed), 6, 60, 80, 1.3, PathStrength(None, None, None))
        assert np.array_equal(again.centre, path.centre) and np.array_equal(again.degrees, path.degrees)
    base = np.zeros((60, 80), np.uint8)
    base[:, :40] = 1
    clip = composite_clip(np.random.default_rng(7), _base_frames(), base,
                          [_donor(COLOURS[0], "d0"), _donor(COLOURS[1], "d1")])
    assert _digest(clip.frames, clip.pasted_masks, clip.first_labels) == ORIGINAL_CLIP


def _measure(strength: PathStrength, seeds=range(8)) -> dict[str, float]:
    """Means over seeds for one pasted object: centroid displacement first -> last frame,
    mean centroid step per frame, area ratio (>= 1) first vs last frame, and the change of
    the mask's principal-axis angle (degrees, 0..90) first vs last frame."""
    shift, step, ratio, turn = [], [], [], []
    for seed in seeds:
        clip = composite_clip(np.random.default_rng(seed), _base_frames(), None, [_donor(COLOURS[0], "d0")],
                              strength)
        assert clip.num_objects == 1
        points = [np.argwhere(clip.pasted_masks[t] == 1).astype(float) for t in range(T)]
        centres = [p.mean(0) for p in points]
        shift.append(np.linalg.norm(centres[-1] - centres[0]))
        step.append(np.mean([np.linalg.norm(b - a) for a, b in zip(centres, centres[1:])]))
        ratio.append(max(len(points[-1]) / len(points[0]), len(points[0]) / len(points[-1])))
        angles = []
        for p in (points[0], points[-1]):
            vals, vecs = np.linalg.eigh(np.cov((p - p.mean(0)).T))
            angles.append(np.degrees(np.arctan2(vecs[0, -1], vecs[1, -1])))
        d = abs(angles[1] - angles[0]) % 180
        turn.append(min(d, 180 - d))
    return {k: float(np.mean(v)) for k, v in
            (("shift", shift), ("step", step), ("ratio", ratio), ("turn", turn))}


def test_larger_settings_move_scale_and_turn_the_objects_further():
    still = _measure(PathStrength(motion=0.0, scale=0.0, rotation=0.0))
    assert still["shift"] == 0 and still["ratio"] == 1 and still["turn"] < 0.5  # nothing moves
    slow, fast = _measure(PathStrength(motion=0.02)), _measure(PathStrength(motion=0.12))
    assert fast["shift"] > 3 * slow["shift"] and fast["shift"] > 10  # pixels over 5 frames of 60x80
    original, faster = _measure(PathStrength()), _measure(PathStrength(motion=0.4))
    assert faster["step"] > 1.5 * original["step"]  # stronger than the original paths, per frame
    small, large = _measure(PathStrength(scale=0.1)), _measure(PathStrength(scale=2.0))
    assert small["ratio"] < 1.25 and large["ratio"] > 2 * small["ratio"] and large["ratio"] > original["ratio"]
    steady, turning = _measure(PathStrength(scale=0.0, rotation=0.0)), _measure(PathStrength(scale=0.0, rotation=60))
    assert turning["turn"] > 10 and turning["turn"] > 5 * steady["turn"] + 1


def test_fast_objects_bounce_off_the_edges_and_stay_in_view():
    for seed in range(5):
        path = sample_path(np.random.default_rng(seed), 12, 60, 80, 1.0, PathStrength(motion=1.0))
        assert (path.centre >= 0).all() and (path.centre[:, 0] <= 79).all() and (path.centre[:, 1] <= 59).all()
        steps = np.linalg.norm(np.diff(path.centre, axis=0), axis=1)
        assert steps.max() > 15  # at least 20 px/frame before a bounce folds a step


@pytest.mark.parametrize("kwargs", [dict(motion=-0.1), dict(motion=1.5), dict(scale=float("nan")),
                                    dict(scale=5.0), dict(rotation=400.0), dict(rotation="30"), dict(motion=True)])
def test_out_of_range_strengths_are_refused(kwargs):
    with pytest.raises(ValueError, match="composite"):
        PathStrength(**kwargs)


def test_a_donor_keeps_its_exact_mask_under_strong_paths():
    clip = composite_clip(np.random.default_rng(2), _base_frames(), None, [_donor(COLOURS[0], "d0")],
                          PathStrength(motion=0.5, scale=2.0, rotation=90))
    for t in range(T):
        where = clip.pasted_masks[t] == 1
        assert where.any() and np.all(clip.frames[t][where] == COLOURS[0])
        assert np.all(clip.frames[t][~where] == (10, 20, 30))
