"""Seeded synthetic video clips with exact masks, for tests, calibration, training and demos.

Textured objects (ellipses and polygons) move over a textured, slowly panning background,
change scale, and pass in front of one another, so later objects occlude earlier ones.
Every frame's mask is exact (it is how the frame was drawn).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np


STYLES = ("texture", "scene")
# The 'scene' style's knobs (tuned so that the shipped small model tracks its clips at 240p).
SCENE_OBJECT_SIZE = (0.6, 0.75)  # object size as a fraction of the shorter side
SCENE_BACKGROUND_SATURATION = 0.3  # 0: grey, 1: the gradient's full colour


@dataclass(frozen=True)
class ClipSpec:
    """What to generate.

    frames: number of frames; height, width: frame size in pixels; objects: number of
    objects (labels 1..objects, drawn back to front in label order); seed: everything is a
    function of it; occlusion: force object 2 (or 1 if alone) to pass behind the last
    object in the middle of the clip.
    """

    frames: int = 24
    height: int = 128
    width: int = 192
    objects: int = 2
    seed: int = 0
    occlusion: bool = True
    style: str = "texture"

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {self.style!r}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"frames must be at least 16x16, got {self.height}x{self.width}")
        if not 1 <= self.objects <= 254:
            raise ValueError(f"objects must be in 1..254, got {self.objects}")


@dataclass(frozen=True)
class SyntheticClip:
    """frames: (T, H, W, 3) uint8 RGB; masks: (T, H, W) uint8 labels (0 = background)."""

    frames: np.ndarray
    masks: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.masks.max())


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth coloured noise plus stripes: (h, w, 3) uint8."""
    base = rng.random(3) * 255
    noise = rng.standard_normal((max(h // 8, 2), max(w // 8, 2), 3)).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.standard_normal((h, w, 3)).astype(np.float32) * 10
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.random() * np.pi
    period = 4 + rng.random() * 12
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    contrast = 20 + rng.random() * 40
    img = base + noise * 35 + fine + stripes[..., None] * contrast * rng.random(3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _scene_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, softly lit scene: a colour gradient, large soft blobs and faint grain:
    (h, w, 3) uint8, muted so that the objects stand out."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    top, bottom = rng.uniform(60, 170, 3), rng.uniform(40, 140, 3)
    img = top + (bottom - top) * (yy / max(h - 1, 1))[..., None]
    blobs = rng.standard_normal((max(h // 48, 2), max(w // 48, 2), 3)).astype(np.float32)
    img = img + cv2.resize(blobs, (w, h), interpolation=cv2.INTER_CUBIC) * 18
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 2.0)
    img = img + grain[..., None] * 10
    grey = img.mean(axis=-1, keepdims=True)
    img = grey + (img - grey) * SCENE_BACKGROUND_SATURATION
    return np.clip(img, 0, 255).astype(np.uint8)


def _object_texture(rng: np.random.Generator, size: int, hue: float) -> np.ndarray:
    """A saturated colour of the given hue (0..1) with shading and mild texture:
    (size, size, 3) uint8."""
    hsv = np.uint8([[[int(hue * 180) % 180, int(rng.uniform(170, 240)), int(rng.uniform(170, 240))]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    angle = rng.random() * 2 * np.pi
    shade = 0.75 + 0.35 * (np.cos(angle) * xx + np.sin(angle) * yy)
    spots = rng.standard_normal((max(size // 10, 2), max(size // 10, 2))).astype(np.float32)
    spots = cv2.resize(spots, (size, size), interpolation=cv2.INTER_CUBIC) * 0.12
    img = colour * (shade + spots)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A filled ellipse or random star-convex polygon in a (size, size) uint8 {0,1} canvas."""
    canvas = np.zeros((size, size), np.uint8)
    c = size / 2
    if rng.random() < 0.5:
        axes = (int(c * (0.55 + 0.4 * rng.random())), int(c * (0.55 + 0.4 * rng.random())))
        cv2.ellipse(canvas, (int(c), int(c)), axes, float(rng.random() * 180), 0, 360, 1, -1)
    else:
        n = int(rng.integers(5, 10))
        angles = np.sort(rng.random(n) * 2 * np.pi)
        radii = c * (0.5 + 0.45 * rng.random(n))
        pts = np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], 1)
        cv2.fillPoly(canvas, [pts.astype(np.int32)], 1)
    return canvas


def generate_clip(spec: ClipSpec | None = None, **kwargs) -> SyntheticClip:
    """Generate a clip; ``generate_clip(frames=8, height=64, width=96, seed=1)`` also works."""
    if spec is None:
        spec = ClipSpec(**kwargs)
    elif kwargs:
        spec = replace(spec, **kwargs)
    rng = np.random.default_rng(spec.seed)
    T, H, W = spec.frames, spec.height, spec.width
    scene = spec.style == "scene"

    # Background: a larger texture that the camera pans across.
    pan = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-0.6, 0.6)]) * max(H, W) / (150 if scene else 60)
    margin = int(np.ceil(np.abs(pan).max() * T)) + 2
    make_background = _scene_background if scene else _texture
    background = make_background(rng, H + 2 * margin, W + 2 * margin)

    base_size = min(H, W)
    hues = (rng.random() + np.arange(spec.objects) / spec.objects) % 1.0 if scene else None
    objects = []
    for i in range(spec.objects):
        size = int(base_size * (rng.uniform(*SCENE_OBJECT_SIZE) if scene else rng.uniform(0.3, 0.5)))
        start = np.array([rng.uniform(0.2, 0.8) * W, rng.uniform(0.2, 0.8) * H])
        end = np.array([rng.uniform(0.2, 0.8) * W, rng.uniform(0.2, 0.8) * H])
        objects.append(
            dict(
                shape=_shape_mask(rng, size),
                texture=_object_texture(rng, size, hues[i]) if scene else _texture(rng, size, size),
                start=start,
                end=end,
                scale=(rng.uniform(0.9, 1.0), rng.uniform(0.9, 1.1)) if scene else (rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.4)),
                rotation=rng.uniform(-20, 20) if scene else rng.uniform(-40, 40),
            )
        )
    if spec.occlusion and spec.objects >= 2 and T >= 3:
        # The occluded object crosses behind the front (last) object at mid-clip.
        hidden, front = objects[-2], objects[-1]
        mid = 0.5 * (front["start"] + front["end"])
        hidden["start"] = mid + (hidden["start"] - mid) * 0.8
        hidden["end"] = 2 * mid - hidden["start"]
        hidden["scale"] = (0.7, 0.8)
        front["scale"] = (1.1, 1.2)
        if scene:
            # Scene clips: the hidden object passes partly behind the front one (about half
            # of it stays in view at the crossing), and both move over a shorter path.
            for obj in (hidden, front):
                centre = 0.5 * (obj["start"] + obj["end"])
                obj["start"] = centre + (obj["start"] - centre) * 0.6
                obj["end"] = centre + (obj["end"] - centre) * 0.6
            path = hidden["end"] - hidden["start"]
            normal = np.array([-path[1], path[0]]) / max(float(np.linalg.norm(path)), 1e-6)
            offset = normal * 0.35 * hidden["shape"].shape[0]
            hidden["start"] = hidden["start"] + offset
            hidden["end"] = hidden["end"] + offset

    frames = np.empty((T, H, W, 3), np.uint8)
    masks = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        a = t / max(T - 1, 1)
        ox, oy = margin + pan * t
        frame = background[int(round(oy)) : int(round(oy)) + H, int(round(ox)) : int(round(ox)) + W].copy()
        label = np.zeros((H, W), np.uint8)
        for idx, obj in enumerate(objects, start=1):
            size = obj["shape"].shape[0]
            centre = obj["start"] * (1 - a) + obj["end"] * a
            scale = obj["scale"][0] * (1 - a) + obj["scale"][1] * a
            mat = cv2.getRotationMatrix2D((size / 2, size / 2), obj["rotation"] * a, scale)
            mat[:, 2] += centre - size / 2
            shape = cv2.warpAffine(obj["shape"], mat, (W, H), flags=cv2.INTER_NEAREST) > 0
            tex = cv2.warpAffine(obj["texture"], mat, (W, H), flags=cv2.INTER_LINEAR)
            frame[shape] = tex[shape]
            label[shape] = idx
        frames[t] = frame
        masks[t] = label
    return SyntheticClip(frames=frames, masks=masks)
