"""Multi-object clips composited from first frames: objects cut from other videos' first
frames (with their exact first-frame masks) are pasted into a base video's frames and
moved along their own paths, with scale change and occlusion.

Why: DAVIS 2016 has one object per video, so single-video clips never teach the model to
tell objects apart. A composite clip has several objects whose masks are exact in every
frame (they are pasted), so the one-shot rule still holds: the training label is frame 0's
composite mask, built only from first-frame annotations.

Depth: pasted objects lie above the base video (whose own objects are known only in frame
0) and above the objects pasted before them; the paths are drawn to cross, so later
objects pass in front of earlier ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# A pasted object is kept only if at least this fraction of its pasted area is visible in
# frame 0 (it must be labelled there for the one-shot rule).
MIN_VISIBLE_FRACTION = 0.3
# Upper bounds of PathStrength: a move of a whole shorter side per frame, a x5 height
# change over a clip, a full turn over a clip.
MAX_MOTION = 1.0
MAX_SCALE = 4.0
MAX_ROTATION = 360.0


@dataclass(frozen=True)
class Donor:
    """An object cut from a video's first frame.

    image: (H, W, 3) uint8 RGB first frame; mask: (H, W) bool, the object's first-frame
    mask (non-empty); name: where it came from."""

    image: np.ndarray
    mask: np.ndarray
    name: str

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"donor {self.name}: image must be (H, W, 3) uint8")
        if self.mask.shape != self.image.shape[:2] or not self.mask.any():
            raise ValueError(f"donor {self.name}: mask must be a non-empty (H, W) mask of the image's size")


@dataclass(frozen=True)
class Path2D:
    """Where a pasted object is in each frame: centre (x, y) in pixels, height in pixels
    and rotation in degrees, one value per frame."""

    centre: np.ndarray  # (T, 2) float64
    height: np.ndarray  # (T,) float64
    degrees: np.ndarray  # (T,) float64


@dataclass(frozen=True)
class CompositeClip:
    """frames: (T, H, W, 3) uint8; pasted_masks: (T, H, W) uint8, the pasted objects'
    exact visible masks (label 1 + number of base objects + paste order, 0 elsewhere);
    first_labels: (H, W) uint8 frame-0 labels: base objects 1..base_objects (where not
    covered), then the pasted objects; base_objects: how many of the labels are the base
    video's; names: the donors' names in label order."""

    frames: np.ndarray
    pasted_masks: np.ndarray
    first_labels: np.ndarray
    base_objects: int
    names: tuple[str, ...]

    @property
    def num_objects(self) -> int:
        return int(self.first_labels.max())


@dataclass(frozen=True)
class PathStrength:
    """How far pasted objects move, grow/shrink and turn; None keeps the original paths.

    motion: each object moves at a constant speed drawn from [motion / 3, motion] of the
    frame's shorter side per frame (0: it stays put), bouncing off the frame's edges so it
    stays in view; None: it crosses 0.3-0.9 of the shorter side over the whole clip,
    whatever the clip's length. scale: its height changes linearly over the clip by a
    factor drawn log-uniformly from [1 / (1 + scale), 1 + scale]; None: 0.6-1.6. rotation:
    it turns by up to this many degrees over the clip (either way, from a start angle in
    -10..10); None: start and end angles both in -10..10."""

    motion: float | None = None
    scale: float | None = None
    rotation: float | None = None

    def __post_init__(self) -> None:
        for name, high, unit in (("motion", MAX_MOTION, "of the frame's shorter side per frame"),
                                 ("scale", MAX_SCALE, "relative height change over the clip"),
                                 ("rotation", MAX_ROTATION, "degrees over the clip")):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
                raise ValueError(f"composite {name} must be a number in [0, {high:g}] ({unit}), or unset for "
                                 f"the original paths, got {value!r}")
            object.__setattr__(self, name, float(value))


def _bounce(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold positions ``x`` (any shape, float64) into [low, high] by reflecting at both ends."""
    span = high - low
    if span <= 0:
        return np.full_like(x, low)
    y = np.mod(x - low, 2 * span)
    return low + np.where(y > span, 2 * span - y, y)


def sample_path(rng: np.random.Generator, num_frames: int, height: int, width: int,
                aspect_hw: float, strength: PathStrength = PathStrength()) -> Path2D:
    """A straight path towards the frame's centre region with a linear scale change and a
    slow rotation (``strength``: how fast, how much; the default is the original x0.6..x1.6
    scale and 0.3-0.9 of the shorter side of travel over the clip). The object's height
    starts at 25-55 % of the frame height (and is capped so its width fits in 70 % of the
    frame). With the default ``strength`` the random draws are the original ones, so clips
    of a fixed seed are unchanged."""
    h0 = rng.uniform(0.25, 0.55) * height
    h0 = min(h0, 0.7 * width * aspect_hw)
    if strength.scale is None:
        h1 = h0 * rng.uniform(0.6, 1.6)
    else:
        h1 = h0 * math.exp(rng.uniform(-1.0, 1.0) * math.log1p(strength.scale))
    start = np.array([rng.uniform(0.15, 0.85) * width, rng.uniform(0.25, 0.75) * height])
    # Head through the centre region, so paths cross and objects occlude each other.
    target = np.array([rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height])
    direction = target - start
    norm = float(np.linalg.norm(direction)) or 1.0
    s = np.linspace(0.0, 1.0, num_frames)[:, None]
    if strength.motion is None:
        travel = rng.uniform(0.3, 0.9) * min(height, width)
        end = start + direction / norm * travel
        centre = start[None] * (1 - s) + end[None] * s
    else:
        speed = rng.uniform(1 / 3, 1.0) * strength.motion * min(height, width)
        centre = start[None] + direction[None] / norm * speed * np.arange(num_frames)[:, None]
        centre = np.stack([_bounce(centre[:, 0], 0.0, width - 1.0), _bounce(centre[:, 1], 0.0, height - 1.0)], 1)
    deg0 = rng.uniform(-10, 10)
    deg1 = rng.uniform(-10, 10) if strength.rotation is None else deg0 + rng.uniform(-1, 1) * strength.rotation
    return Path2D(centre, h0 + (h1 - h0) * s[:, 0], deg0 + (deg1 - deg0) * s[:, 0])


def _cut(donor: Donor) -> tuple[np.ndarray, np.ndarray]:
    """The donor's object cropped to its bounding box: (h, w, 3) uint8, (h, w) uint8 0/1."""
    ys, xs = np.nonzero(donor.mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return donor.image[y0:y1, x0:x1], donor.mask[y0:y1, x0:x1].astype(np.uint8)


def _placement(patch_hw: tuple[int, int], centre: np.ndarray, height: float, degrees: float) -> np.ndarray:
    """2x3 affine from patch pixels to frame pixels: scale to ``height``, rotate about the
    patch centre, centre at ``centre``."""
    ph, pw = patch_hw
    scale = height / ph
    a = math.radians(degrees)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    px, py = (pw - 1) / 2, (ph - 1) / 2
    return np.array([[c, -s, centre[0] - (c * px - s * py)], [s, c, centre[1] - (s * px + c * py)]])


def composite_clip(
    rng: np.random.Generator,
    frames: list[np.ndarray] | np.ndarray,
    base_labels: np.ndarray | None,
    donors: list[Donor],
    strength: PathStrength = PathStrength(),
) -> CompositeClip:
    """Paste ``donors`` into ``frames`` (T x (H, W, 3) uint8) along random crossing paths.

    base_labels: (H, W) uint8 frame-0 labels of the base video's objects 1..k (0 and 255
    are not objects), or None to treat the base video as background only (every mask of
    the result is then exact in every frame); strength: how far the objects move, scale
    and turn (:class:`PathStrength`; the default gives the original paths). A donor that
    ends up less than ``MIN_VISIBLE_FRACTION`` visible in frame 0 is dropped (it would be
    unlabelled)."""
    frames = np.stack([np.asarray(f) for f in frames])
    t_count, height, width = frames.shape[:3]
    out = frames.copy()
    if base_labels is None:
        first = np.zeros((height, width), np.uint8)
    else:
        if base_labels.shape != (height, width):
            raise ValueError(f"base labels {base_labels.shape} do not match frames {(height, width)}")
        first = np.where(base_labels == 255, 0, base_labels).astype(np.uint8)
    base_objects = int(first.max())
    pasted = np.zeros((t_count, height, width), np.uint8)
    pasted_area0: dict[int, int] = {}
    names: list[str] = []
    label = base_objects
    for donor in donors:
        patch, patch_mask = _cut(donor)
        path = sample_path(rng, t_count, height, width, patch.shape[0] / patch.shape[1], strength)
        label += 1
        for t in range(t_count):
            m = _placement(patch.shape[:2], path.centre[t], path.height[t], path.degrees[t])
            warped = cv2.warpAffine(patch, m, (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
            cover = cv2.warpAffine(patch_mask, m, (width, height), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
            out[t][cover] = warped[cover]
            pasted[t][cover] = label
            if t == 0:
                pasted_area0[label] = int(cover.sum())
        names.append(donor.name)
    # Frame 0 labels: the pasted objects cover the base objects.
    first = np.where(pasted[0] > 0, pasted[0], first)
    # Drop pasted objects hardly visible in frame 0 and renumber the rest contiguously.
    lut = np.arange(256, dtype=np.uint8)
    kept_names, next_label = [], base_objects + 1
    for i, name in enumerate(names):
        old = base_objects + 1 + i
        visible = int((first == old).sum())
        if pasted_area0.get(old, 0) == 0 or visible < MIN_VISIBLE_FRACTION * pasted_area0[old]:
            lut[old] = 0
        else:
            lut[old] = next_label
            kept_names.append(name)
            next_label += 1
    first, pasted = lut[first], lut[pasted]
    # A dropped object still occludes what is behind it; in frame 0 it is unlabelled
    # (background), which the base video's labels under it would otherwise contradict.
    return CompositeClip(out, pasted, first, base_objects, tuple(kept_names))
