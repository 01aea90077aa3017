"""DAVIS region similarity J and boundary accuracy F, as the official davis2017-evaluation
code computes them (semi-supervised protocol).

- J: intersection over union of an object's predicted and true masks (1 when both are
  empty).
- F: boundary F-measure. Boundaries are one-pixel maps (``seg2bmap``, the Berkeley
  boundary code used by DAVIS); a boundary pixel matches if the other boundary dilated by
  a disk of radius ceil(0.008 * image diagonal) covers it.
- Per object: the mean over frames, the first and last frames excluded. Objects are the
  labels of the first ground-truth frame. Means over a dataset are over objects.

``tests/runtime/test_metrics.py`` checks agreement with the ``vos-benchmark`` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

BOUND_TH = 0.008
VOID = 255  # DAVIS "void": left out of both masks when scoring, never an object


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks (H, W); 1.0 when both are empty."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = np.logical_or(pred, gt).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, gt).sum() / union)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map (H, W) bool of a binary mask (D. Martin, 2003, as in
    davis2017-evaluation): boundary pixels are offset by 1/2 pixel towards the origin."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def disk(radius: int) -> np.ndarray:
    """Disk structuring element (2r+1, 2r+1) uint8: x^2 + y^2 <= r^2 (as skimage's disk)."""
    grid = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(grid, grid)
    return (x**2 + y**2 <= radius**2).astype(np.uint8)


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two boolean masks (H, W)."""
    bound_pix = bound_th if bound_th >= 1 else int(np.ceil(bound_th * np.linalg.norm(pred.shape)))
    fg_boundary = seg2bmap(pred)
    gt_boundary = seg2bmap(gt)
    kernel = disk(int(bound_pix))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel)
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = int(fg_boundary.sum())
    n_gt = int(gt_boundary.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = fg_match.sum() / float(n_fg)
        recall = gt_match.sum() / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


@dataclass(frozen=True)
class ObjectScore:
    """Mean J and F of one object over the evaluated frames (values in [0, 1])."""

    label: int
    J: float
    F: float
    frames: int

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2


def evaluate_objects(
    predictions: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    skip_first_and_last: bool = True,
) -> list[ObjectScore]:
    """Score one sequence.

    predictions, ground_truth: label maps (H, W), one per frame, in frame order.
    Objects: the labels of the first ground-truth frame but 0 and 255 (void; void pixels
    are excluded from J and F as in the DAVIS 2017 toolkit). With
    ``skip_first_and_last`` (the DAVIS semi-supervised protocol) the first and last
    frames are not scored. Returns one :class:`ObjectScore` per object.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth frames")
    objects = [int(v) for v in np.unique(ground_truth[0]) if v != 0 and v != VOID]
    frames = list(range(len(ground_truth)))
    if skip_first_and_last:
        frames = frames[1:-1]
    if not frames:
        raise ValueError(
            f"a sequence of {len(ground_truth)} frames has no frame to score once the first "
            f"and last are excluded"
        )
    scores = []
    for label in objects:
        js, fs = [], []
        for i in frames:
            pred, gt = predictions[i], ground_truth[i]
            if pred.shape != gt.shape:
                raise ValueError(f"frame {i}: prediction {pred.shape} and ground truth {gt.shape} differ in size")
            void = gt == VOID  # DAVIS: void pixels count for neither mask
            pred_obj = (pred == label) & ~void
            js.append(jaccard(pred_obj, gt == label))
            fs.append(boundary_f(pred_obj, gt == label))
        scores.append(ObjectScore(label, float(np.mean(js)), float(np.mean(fs)), len(frames)))
    return scores
