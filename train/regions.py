"""Self-made first-frame labels for unlabelled frames: colour regions as pseudo-objects.

DAVIS gives one labelled frame per training video (25 images in all here), so the key
encoder sees few labelled textures. A *region clip* starts at any frame of a training
video and labels regions of that frame found without any annotation: pixels are clustered
by colour and position (k-means in Lab + xy, on a 1/4-size copy), each cluster is split
(at full size, from centres found on a 1/4 copy) into connected parts, and up to ``max_regions`` parts of a plausible size that stand out
from their surroundings are kept and smoothed. The cycle loss then asks the model to follow those regions through the real
frames that follow and rebuild them, so every frame of every training video can serve as
a first frame, and no annotation file is opened.
"""

from __future__ import annotations

import cv2
import numpy as np

# A region must cover this fraction of the frame (after smoothing) to be kept.
MIN_AREA = 0.02
MAX_AREA = 0.35
# ... and differ from the ring of pixels around it by this much (Lab distance of the means).
MIN_CONTRAST = 10.0
_SCALE = 4  # clustering runs on a 1/_SCALE copy
_ITERATIONS = 8


def _kmeans(rng: np.random.Generator, points: np.ndarray, k: int) -> np.ndarray:
    """(P, D) float32 -> (k', D) cluster centres (k' <= k); k-means++ seeding from ``rng``."""
    centres = [points[int(rng.integers(len(points)))]]
    d2 = ((points - centres[0]) ** 2).sum(1)  # squared distance to the nearest centre so far
    for _ in range(1, k):
        if len(centres) > 1:
            d2 = np.minimum(d2, ((points - centres[-1]) ** 2).sum(1))
        total = float(d2.sum())
        if total <= 0:
            break
        centres.append(points[int(rng.choice(len(points), p=d2 / total))])
    c = np.stack(centres)
    for _ in range(_ITERATIONS):
        ids = _assign(points, c)
        for j in range(len(c)):
            members = points[ids == j]
            if len(members):
                c[j] = members.mean(0)
    return c


def _assign(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)


def _lab(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) float32 Lab (OpenCV's 8-bit scaling)."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)


def _features(lab: np.ndarray, spatial: float) -> np.ndarray:
    """(H, W, 3) float32 Lab -> (H*W, 5) float32: Lab colour and position (scaled by
    ``spatial`` over the longer side), so the same centres apply at any size."""
    h, w = lab.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = float(max(h, w))
    return np.concatenate(
        [lab.reshape(-1, 3), (yy.reshape(-1, 1) / side) * spatial, (xx.reshape(-1, 1) / side) * spatial], axis=1
    )


def _contrast(lab: np.ndarray, region: np.ndarray, ring_kernel: np.ndarray) -> float:
    """Lab distance between the mean colour of ``region`` and of the ring around it."""
    ring = (cv2.dilate(region.astype(np.uint8), ring_kernel) > 0) & ~region
    if not ring.any():
        return 0.0
    return float(np.linalg.norm(lab[region].mean(0) - lab[ring].mean(0)))


def region_labels(rng: np.random.Generator, image: np.ndarray, max_regions: int) -> np.ndarray:
    """Pseudo-object labels of one frame.

    image: (H, W, 3) uint8 RGB. Returns (H, W) uint8 with 0 = background and 1..k the
    chosen regions (k <= max_regions, disjoint, each covering MIN_AREA..MAX_AREA of the
    frame and differing in mean colour from its surroundings by MIN_CONTRAST); all zeros when no region qualifies (a flat frame). All randomness (cluster
    count, seeding, which regions) comes from ``rng``.
    """
    if max_regions < 1:
        raise ValueError(f"max_regions must be >= 1, got {max_regions}")
    height, width = image.shape[:2]
    spatial = float(rng.uniform(20.0, 60.0))  # weight of position against colour
    small = cv2.resize(image, (max(8, width // _SCALE), max(8, height // _SCALE)), interpolation=cv2.INTER_AREA)
    centres = _kmeans(rng, _features(_lab(cv2.GaussianBlur(small, (3, 3), 0)), spatial), int(rng.integers(6, 13)))
    # one assignment step at full size: region edges follow the frame's own colour edges
    lab = _lab(cv2.GaussianBlur(image, (5, 5), 0))
    ids = _assign(_features(lab, spatial), centres).reshape(height, width)
    ring_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    candidates = []
    for cluster in np.unique(ids):
        part = cv2.morphologyEx((ids == cluster).astype(np.uint8), cv2.MORPH_OPEN, kernel)
        count, comps = cv2.connectedComponents(part, connectivity=4)
        for c in range(1, count):
            region = comps == c
            if MIN_AREA <= region.mean() <= MAX_AREA and _contrast(lab, region, ring_kernel) >= MIN_CONTRAST:
                candidates.append(region)
    out = np.zeros((height, width), np.uint8)
    if not candidates:
        return out
    order = rng.permutation(len(candidates))[:max_regions]
    big_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    label = 0
    for i in order:
        full = cv2.morphologyEx(candidates[int(i)].astype(np.uint8), cv2.MORPH_CLOSE, big_kernel)
        free = (full > 0) & (out == 0)
        if MIN_AREA <= free.mean() <= MAX_AREA:
            label += 1
            out[free] = label
    return out
