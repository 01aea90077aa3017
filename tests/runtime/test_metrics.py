"""J and F: hand-made cases, and agreement with the vos-benchmark package (the DAVIS
evaluation code used by recent VOS papers) to 1e-3 on random shapes."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.metrics import boundary_f, disk, evaluate_objects, jaccard, seg2bmap


def square(h, w, top, left, size):
    m = np.zeros((h, w), bool)
    m[top : top + size, left : left + size] = True
    return m


def test_jaccard_hand_cases():
    a = square(10, 10, 0, 0, 4)  # 16 px
    b = square(10, 10, 2, 2, 4)  # overlap 4 px, union 28
    assert jaccard(a, b) == pytest.approx(4 / 28)
    assert jaccard(a, a) == 1.0
    assert jaccard(np.zeros((5, 5), bool), np.zeros((5, 5), bool)) == 1.0
    assert jaccard(a, np.zeros_like(a)) == 0.0


def test_boundary_hand_cases():
    a = square(100, 100, 20, 20, 40)
    assert boundary_f(a, a) == 1.0
    # Radius ceil(0.008 * 141.4) = 2: a 1-pixel shift matches fully, a 10-pixel one not at all.
    assert boundary_f(square(100, 100, 21, 20, 40), a) == 1.0
    assert boundary_f(square(100, 100, 70, 70, 25), a) == 0.0
    empty = np.zeros_like(a)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(empty, a) == 0.0 and boundary_f(a, empty) == 0.0


def test_seg2bmap_and_disk():
    a = square(6, 6, 1, 1, 3)
    b = seg2bmap(a)
    # Boundaries are offset half a pixel towards the origin: the pixel above-left of the
    # square and its own bottom-right pixel are boundary, the interior pixel (2, 2) is not.
    assert b[0, 0] and b[3, 3] and not b[2, 2] and not b[1, 1]
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def test_protocol_skips_first_and_last_frames():
    gt = [square(20, 20, 5, 5, 8).astype(np.uint8)] * 4
    perfect = list(gt)
    wrong = [np.zeros((20, 20), np.uint8)] + perfect[1:3] + [np.zeros((20, 20), np.uint8)]
    [score] = evaluate_objects(wrong, gt)
    assert score.J == 1.0 and score.F == 1.0 and score.frames == 2
    [score] = evaluate_objects(perfect[:1] + [wrong[0]] * 3, gt)
    assert score.J == 0.0


def random_blobs(rng, h, w, labels):
    import cv2

    m = np.zeros((h, w), np.uint8)
    for label in labels:
        if rng.random() < 0.15:
            continue  # the object is missing in this frame
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(3, w // 3)), int(rng.integers(3, h // 3)))
        cv2.ellipse(m, center, axes, float(rng.random() * 180), 0, 360, int(label), -1)
    return m


def test_agreement_with_vos_benchmark():
    evaluator_mod = pytest.importorskip(
        "vos_benchmark.evaluator", reason="vos-benchmark is not installed (pip install vos-benchmark)"
    )
    rng = np.random.default_rng(0)
    labels = [1, 2, 5]
    h, w = 72, 96
    gt = [random_blobs(rng, h, w, labels) for _ in range(12)]
    for label in labels:  # every object in the first and second ground-truth frames
        for i in (0, 1):
            gt[i][10 + 15 * labels.index(label) : 20 + 15 * labels.index(label), 5:25] = label
    pred = []
    for g in gt:
        p = g.copy()
        shift = int(rng.integers(-3, 4))
        p = np.roll(p, shift, axis=1)
        p[rng.random((h, w)) < 0.01] = 0
        pred.append(p)
    ours = {s.label: s for s in evaluate_objects(pred, gt)}
    ev = evaluator_mod.Evaluator(name="check")
    for p, g in zip(pred[1:-1], gt[1:-1]):
        ev.feed_frame(p, g)
    iou, bf = ev.conclude()
    assert set(ours) == set(iou) == set(labels)
    for label in labels:
        assert abs(ours[label].J - iou[label] / 100) < 1e-3
        assert abs(ours[label].F - bf[label] / 100) < 1e-3
    # The comparison is not vacuous: scores are neither all perfect nor all equal.
    assert len({round(s.J, 4) for s in ours.values()}) > 1 and min(s.F for s in ours.values()) < 1
