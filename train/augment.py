"""Clip augmentation (the published recipe), one affine warp per frame with OpenCV.

Per clip: random resized crop (area scale range, aspect 3/4..4/3), horizontal flip,
colour jitter and 5% grayscale. Per frame: a small random affine (rotation, shear) about
the image centre and a slight extra colour jitter. Frame 0's mask gets frame 0's warp
(nearest neighbour). All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .config import DataConfig

_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class ClipWarp:
    """3x3 matrices mapping source pixels to crop pixels, one per frame."""

    matrices: tuple[np.ndarray, ...]


def _affine_about(center: tuple[float, float], degrees: float, shear: float) -> np.ndarray:
    cx, cy = center
    a, s = math.radians(degrees), math.radians(shear)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    sh = np.array([[1, math.tan(s), 0], [0, 1, 0], [0, 0, 1]])
    to_c = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    return back @ rot @ sh @ to_c


def sample_warp(
    rng: np.random.Generator, num_frames: int, height: int, width: int, cfg: DataConfig
) -> ClipWarp:
    """Draw the crop/flip (shared) and per-frame affines for a clip of (height, width)."""
    out_h, out_w = cfg.crop_size
    area = height * width
    crop_w, crop_h = width, height
    for _ in range(10):
        target = area * rng.uniform(*cfg.crop_scale)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            crop_w, crop_h = w, h
            break
    else:  # fall back to the largest centred crop of the output aspect ratio
        scale = min(width / out_w, height / out_h)
        crop_w, crop_h = int(out_w * scale), int(out_h * scale)
    x0 = rng.uniform(0, width - crop_w)
    y0 = rng.uniform(0, height - crop_h)
    crop = np.array(
        [[out_w / crop_w, 0, -x0 * out_w / crop_w], [0, out_h / crop_h, -y0 * out_h / crop_h], [0, 0, 1]]
    )
    if cfg.hflip and rng.random() < 0.5:
        crop = np.array([[-1, 0, out_w - 1], [0, 1, 0], [0, 0, 1]]) @ crop
    matrices = []
    for _ in range(num_frames):
        deg = rng.uniform(-cfg.affine_degrees, cfg.affine_degrees)
        shear = rng.uniform(-cfg.affine_shear, cfg.affine_shear)
        matrices.append(crop @ _affine_about(((width - 1) / 2, (height - 1) / 2), deg, shear))
    return ClipWarp(tuple(matrices))


def warp_image(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8, bilinear, borders filled with the mean colour."""
    h, w = size
    return cv2.warpAffine(
        image, matrix[:2].astype(np.float64), (w, h), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(124, 116, 104),
    )


def warp_labels(labels: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 labels -> (h, w), nearest neighbour, borders background."""
    h, w = size
    return cv2.warpAffine(
        labels, matrix[:2].astype(np.float64), (w, h), flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def _jitter(image: np.ndarray, rng: np.random.Generator, strength: float, contrast: float) -> np.ndarray:
    x = image.astype(np.float32)
    x *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = (x @ _GRAY).mean()
    x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean  # contrast
    gray = (x @ _GRAY)[..., None]
    x = (x - gray) * rng.uniform(1 - contrast, 1 + contrast) + gray  # saturation
    return np.clip(x, 0, 255).astype(np.uint8)


def colour_jitter_clip(frames: list[np.ndarray], rng: np.random.Generator, strength: float) -> list[np.ndarray]:
    """Per-clip jitter (brightness ``strength``, contrast/saturation ``0.3*strength``),
    5% grayscale, then a slight per-frame jitter (0.1 * strength)."""
    if strength <= 0:
        return frames
    clip_params = rng.integers(0, 2**31)
    gray = rng.random() < 0.05
    out = []
    for frame in frames:
        x = _jitter(frame, np.random.default_rng(clip_params), strength, 0.3 * strength)
        x = _jitter(x, rng, 0.1 * strength, 0.1 * strength)
        if gray:
            x = np.repeat((x.astype(np.float32) @ _GRAY)[..., None], 3, axis=2).astype(np.uint8)
        out.append(x)
    return out


def hue_rotation(degrees: float) -> np.ndarray:
    """(3, 3) matrix rotating RGB colours by ``degrees`` about the grey axis (Rodrigues);
    greys, and the mean of the three channels, are unchanged."""
    a = math.radians(degrees)
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return (math.cos(a) * np.eye(3) + math.sin(a) * cross + (1 - math.cos(a)) * np.outer(k, k)).astype(np.float32)


def colour_shortcut_clip(
    frames: list[np.ndarray], rng: np.random.Generator, hue: float, channel_shuffle: float, grayscale: float
) -> list[np.ndarray]:
    """Per clip, the same for every frame, so objects keep their identity: a random hue
    rotation of up to ``hue`` x 360 degrees, a random permutation of the RGB channels with
    probability ``channel_shuffle``, and grayscale with probability ``grayscale``.
    These break the shortcut "the object is the red thing". Nothing is drawn from ``rng``
    for a switched-off part, so recipes without them keep their randomness."""
    matrix = np.eye(3, dtype=np.float32)
    if hue > 0:
        matrix = hue_rotation(rng.uniform(-hue, hue) * 360.0) @ matrix
    if channel_shuffle > 0 and rng.random() < channel_shuffle:
        matrix = np.eye(3, dtype=np.float32)[rng.permutation(3)] @ matrix
    if grayscale > 0 and rng.random() < grayscale:
        matrix = np.repeat(_GRAY[None], 3, axis=0) @ matrix
    if np.array_equal(matrix, np.eye(3, dtype=np.float32)):
        return frames
    return [np.clip(f.astype(np.float32) @ matrix.T, 0, 255).astype(np.uint8) for f in frames]
