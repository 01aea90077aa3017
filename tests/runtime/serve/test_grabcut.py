"""runtime.serve.grabcut: the box tool's GrabCut proposal and its input checks."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.serve.grabcut import check_box, parse_box, propose


def textured_scene(height=60, width=80, square=(25, 15, 55, 45)):
    """(frame (H, W, 3) uint8, truth (H, W) 0/1): a bright square on a dark textured background."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    frame[::4] //= 2  # stripes: texture, not flat noise
    x0, y0, x1, y1 = square
    frame[y0:y1, x0:x1] = rng.integers(200, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    truth = np.zeros((height, width), np.uint8)
    truth[y0:y1, x0:x1] = 1
    return frame, truth


def iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def test_proposal_finds_the_square_in_a_loose_box():
    frame, truth = textured_scene()
    proposal = propose(frame, (15, 6, 66, 54))  # 10 px of background around the square
    assert proposal.shape == truth.shape and proposal.dtype == np.uint8
    assert set(np.unique(proposal).tolist()) <= {0, 1}
    assert iou(proposal, truth) > 0.8
    assert not proposal[:6].any() and not proposal[:, :15].any()  # nothing outside the box


def test_hint_strokes_override_the_box():
    frame, truth = textured_scene()
    frame[2:6, 70:76] = 230  # a second bright patch, outside the box
    hint = np.zeros(truth.shape, np.uint8)
    hint[8:14, 16:24] = 2  # "background" inside the box, beside the square
    hint[2:6, 70:76] = 1  # "object": the patch outside the box
    proposal = propose(frame, (15, 6, 66, 54), hint)
    assert not proposal[8:14, 16:24].any()
    assert proposal[2:6, 70:76].all()
    expected = truth.copy()
    expected[2:6, 70:76] = 1
    assert iou(proposal, expected) > 0.8
    assert not propose(frame, (15, 6, 66, 54))[2:6, 70:76].any()  # without the hint: outside


@pytest.mark.parametrize("box, fragment", [
    ((0, 0, 81, 10), "does not lie inside the 80x60 frame"),
    ((10, 10, 5, 20), "does not lie inside"),
    ((-1, 0, 10, 10), "does not lie inside"),
    ((3, 3, 4, 10), "smaller than 2x2"),
    ((0, 0, 80, 60), "covers the whole 80x60 frame"),
    (("a", 0, 1, 1), "not four integers"),
])
def test_bad_boxes_are_refused_with_one_line(box, fragment):
    frame, _ = textured_scene()
    with pytest.raises(InputError, match=fragment) as info:
        propose(frame, box)
    assert "\n" not in str(info.value)


def test_bad_frames_hints_and_iterations_are_refused():
    frame, truth = textured_scene()
    with pytest.raises(InputError, match="RGB image"):
        propose(frame[..., 0], (1, 1, 10, 10))
    with pytest.raises(InputError, match="RGB image"):
        propose(frame.astype(np.float32), (1, 1, 10, 10))
    with pytest.raises(InputError, match=r"hint must be a \(60, 80\) uint8"):
        propose(frame, (1, 1, 10, 10), truth[:10])
    with pytest.raises(InputError, match="hint values must be 0"):
        propose(frame, (1, 1, 10, 10), truth * 3)
    with pytest.raises(InputError, match="whole box as background"):
        propose(frame, (1, 1, 10, 10), np.full(truth.shape, 2, np.uint8))
    for bad in (0, 11, 2.0, True):
        with pytest.raises(InputError, match="iterations must be an integer from 1 to 10"):
            propose(frame, (1, 1, 10, 10), iterations=bad)


def test_parse_box():
    assert parse_box("1, 2,30,40") == (1, 2, 30, 40)
    for bad in ("1,2,3", "1,2,3,x", "", "1.5,2,3,4"):
        with pytest.raises(InputError, match="x0,y0,x1,y1"):
            parse_box(bad)
    assert check_box(("1", 2, 3, 4), 10, 10) == (1, 2, 3, 4)
