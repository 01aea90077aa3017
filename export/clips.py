"""Video clips for calibration and verification, and the graph inputs recorded from them.

A clip is frames (T, H, W, 3) uint8 plus, where known, label maps (T, H, W) uint8. Sources:
the toolkit's synthetic generator (exact masks), or a folder of frames with an optional
folder of masks (e.g. a DAVIS sequence: ``JPEGImages/480p/bear`` + ``Annotations/480p/bear``).

Graph inputs are recorded by running the PyTorch fp32 pipeline (:class:`runtime.engine.session.
VideoSession` over :class:`runtime.backends.torch_backend.TorchBackend`) through the clip,
so the mask autoencoder is calibrated on the coarse masks that the real memory readout
produces, not on made-up ones. The feeds are written to disk as they are made
(:class:`export.feeds.FeedSpool`), so recording holds one frame's feeds, not the clip's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from runtime.backends.base import KeyFeatures
from runtime.backends.torch_backend import TorchBackend
from runtime.config import SessionConfig
from runtime.errors import InputError
from runtime.io.frames import FrameFolder
from runtime.io.mask_io import read_mask
from runtime.engine.session import VideoSession
from stmae.network import STMAE
from stmae.synthetic import ClipSpec, generate_clip

from .feeds import FeedSpool


@dataclass(frozen=True)
class Clip:
    """frames: (T, H, W, 3) uint8 RGB; masks: (T, H, W) uint8 labels or None; source: text."""

    frames: np.ndarray
    masks: np.ndarray | None
    source: str

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"clip frames must be (T, H, W, 3) uint8, got {self.frames.dtype} {self.frames.shape}")
        if self.masks is not None and self.masks.shape != self.frames.shape[:3]:
            raise ValueError(f"clip masks {self.masks.shape} do not match frames {self.frames.shape[:3]}")

    def first_mask(self) -> np.ndarray:
        """The annotation the pipelines start from: the first mask if the clip has masks,
        else a centred ellipse covering about a fifth of the frame (object 1)."""
        if self.masks is not None and self.masks[0].any():
            return self.masks[0]
        h, w = self.frames.shape[1:3]
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (w // 2, h // 2), (max(w // 4, 2), max(h // 4, 2)), 0, 0, 360, 1, -1)
        return mask


def synthetic_clip(frames: int, height: int, width: int, seed: int, objects: int = 2, style: str = "scene") -> Clip:
    """A seeded synthetic clip with exact masks ('scene' style: what a natural video looks
    like to the model; see :mod:`stmae.synthetic`)."""
    clip = generate_clip(ClipSpec(frames=frames, height=height, width=width, objects=objects, seed=seed, style=style))
    return Clip(clip.frames, clip.masks,
                f"synthetic {style} clip (seed {seed}, {objects} objects, {frames} frames, {width}x{height})")


def folder_clip(frames_dir: str | Path, masks_dir: str | Path | None = None, max_frames: int | None = None) -> Clip:
    """Frames of a folder (sorted by name), the first ``max_frames``; masks named like the
    frames (``<stem>.png``) from ``masks_dir`` if given."""
    frames_dir = Path(frames_dir)
    if not frames_dir.is_dir():
        raise InputError(f"frames folder {frames_dir} does not exist")
    folder = FrameFolder(frames_dir)
    frames, names = [], []
    for name, frame in folder:
        frames.append(frame)
        names.append(name)
        if max_frames is not None and len(frames) >= max_frames:
            break
    masks = None
    if masks_dir is not None:
        masks_dir = Path(masks_dir)
        masks = np.stack([read_mask(masks_dir / f"{n}.png")[0] for n in names])
    return Clip(np.stack(frames), masks, f"{frames_dir} ({len(frames)} frames)")


class _RecordingBackend:
    """A backend wrapper that writes the inputs of every graph call, as float32 numpy feeds,
    to a spool on disk (:class:`export.feeds.FeedSpool`) and keeps none of them."""

    def __init__(self, inner: TorchBackend, key_feeds: FeedSpool, mask_feeds: FeedSpool) -> None:
        self.inner = inner
        self.name, self.device, self.precision = inner.name, inner.device, inner.precision
        self.key_feeds, self.mask_feeds = key_feeds, mask_feeds

    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        self.key_feeds.append({"image": image.cpu().numpy()})
        return self.inner.encode_key(image)

    def segment(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        self.mask_feeds.append(
            {
                "image": image.cpu().numpy(),
                "f16": features.f16.float().cpu().numpy(),
                "f8": features.f8.float().cpu().numpy(),
                "f4": features.f4.float().cpu().numpy(),
                "coarse": coarse.float().cpu().numpy(),
            }
        )
        return self.inner.segment(image, features, coarse)


def record_graph_inputs(
    model: STMAE, clip: Clip, session_config: SessionConfig, folder: str | Path
) -> tuple[FeedSpool, FeedSpool]:
    """Run the fp32 torch pipeline over the clip; return the feeds of the key encoder and
    of the mask autoencoder ({input name: float32 array}, one per call), spooled to
    ``folder``/key_encoder and ``folder``/mask_autoencoder as they are made (memory: one
    frame's feeds, whatever the clip's length)."""
    folder = Path(folder)
    key_feeds, mask_feeds = FeedSpool(folder / "key_encoder"), FeedSpool(folder / "mask_autoencoder")
    backend = _RecordingBackend(TorchBackend(model, "cpu", "fp32"), key_feeds, mask_feeds)
    session = VideoSession(backend, session_config)
    for t, frame in enumerate(clip.frames):
        session.step(frame, clip.first_mask() if t == 0 else None)
    return key_feeds, mask_feeds
