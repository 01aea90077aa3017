"""Training clips: real videos (first-frame mask only) and synthetic clips, and batching.

A sample is addressed by a :class:`ClipRequest` (epoch, index): every random choice
(frames, gaps, objects, augmentation, synthetic content) is drawn from
``numpy.random.default_rng([seed, epoch, index])``, so a clip is the same in any worker,
process or resumed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from stmae.preprocess import normalize_image
from stmae.synthetic import ClipSpec, generate_clip

from .augment import colour_jitter_clip, sample_warp, warp_image, warp_labels
from .config import DataConfig
from .video_folders import VideoEntry, list_videos, read_labels, read_rgb

# An object smaller than this fraction of the crop after augmentation is dropped.
MIN_OBJECT_FRACTION = 0.002
_AUGMENT_TRIES = 5


class ClipRequest(NamedTuple):
    """What the sampler hands the dataset: the epoch (for the gap schedule and the
    randomness) and the clip index within the epoch's clip list."""

    epoch: int
    index: int


@dataclass(frozen=True)
class ClipSample:
    """frames: (T, H, W, 3) uint8; labels: (H, W) uint8 frame-0 labels 1..num_objects;
    num_objects: objects kept (0 if augmentation lost them all); name: the source video."""

    frames: np.ndarray
    labels: np.ndarray
    num_objects: int
    name: str


@dataclass(frozen=True)
class ClipBatch:
    """frames: (B, T, 3, H, W) float32 normalized; first_masks: (B, N, H, W) float32
    one-hot masks of frame 0 (N = most objects in the batch); valid: (B, N) bool."""

    frames: torch.Tensor
    first_masks: torch.Tensor
    valid: torch.Tensor
    names: tuple[str, ...]

    def to(self, device: torch.device) -> "ClipBatch":
        return ClipBatch(
            self.frames.to(device, non_blocking=True), self.first_masks.to(device, non_blocking=True),
            self.valid.to(device, non_blocking=True), self.names,
        )


def frame_indices(rng: np.random.Generator, length: int, num_frames: int, max_gap: int) -> list[int]:
    """T increasing frame indices starting at 0 with gaps in 1..max_gap (shrunk so they fit
    in ``length`` frames; a video shorter than T frames repeats its last frame)."""
    if length - 1 < num_frames - 1:
        return [min(i, length - 1) for i in range(num_frames)]
    gap = max(1, min(max_gap, (length - 1) // (num_frames - 1)))
    steps = rng.integers(1, gap + 1, size=num_frames - 1)
    return [0] + np.cumsum(steps).tolist()


def choose_objects(rng: np.random.Generator, labels: np.ndarray, max_objects: int) -> np.ndarray:
    """Relabel up to ``max_objects`` random objects of ``labels`` (255 = void ignored) to
    1..k, everything else 0."""
    present = [int(v) for v in np.unique(labels) if v not in (0, 255)]
    if len(present) > max_objects:
        present = sorted(rng.choice(present, size=max_objects, replace=False).tolist())
    lut = np.zeros(256, np.uint8)
    for new, old in enumerate(present, start=1):
        lut[old] = new
    return lut[labels]


def augment_clip(
    rng: np.random.Generator, frames: list[np.ndarray], labels: np.ndarray, cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """Warp and jitter a clip; keep objects that stay visible in frame 0.
    Returns (frames (T, h, w, 3) uint8, labels (h, w) uint8 relabelled 1..k, k)."""
    height, width = labels.shape
    min_pixels = MIN_OBJECT_FRACTION * cfg.crop_size[0] * cfg.crop_size[1]
    for _ in range(_AUGMENT_TRIES):
        warp = sample_warp(rng, len(frames), height, width, cfg)
        out_labels = warp_labels(labels, warp.matrices[0], cfg.crop_size)
        counts = np.bincount(out_labels.ravel(), minlength=int(labels.max()) + 1)[1:]
        kept = [i + 1 for i, c in enumerate(counts) if c >= min_pixels]
        if kept:
            break
    lut = np.zeros(256, np.uint8)
    for new, old in enumerate(kept, start=1):
        lut[old] = new
    out_frames = [warp_image(f, m, cfg.crop_size) for f, m in zip(frames, warp.matrices)]
    out_frames = colour_jitter_clip(out_frames, rng, cfg.color_jitter)
    return np.stack(out_frames), lut[out_labels], len(kept)


class OneShotClips(Dataset):
    """The epoch's clip list: every real video ``repeats`` times, then ``synthetic_clips``
    synthetic clips. ``max_gap(epoch)`` gives the gap schedule."""

    def __init__(self, cfg: DataConfig, seed: int, max_gap: Callable[[int], int]) -> None:
        self.cfg = cfg
        self.seed = seed
        self.max_gap = max_gap
        self.videos: list[VideoEntry] = []
        for root in cfg.davis_roots:
            self.videos += list_videos(root, cfg.davis_resolution, cfg.sequences, cfg.exclude_sequences)
        for root in cfg.youtube_roots:
            self.videos += list_videos(root, None, cfg.sequences, cfg.exclude_sequences)
        if not self.videos and not cfg.synthetic_clips:
            raise ValueError("no training videos were found in the given folders")

    @property
    def num_real(self) -> int:
        return len(self.videos) * self.cfg.repeats

    def __len__(self) -> int:
        return self.num_real + self.cfg.synthetic_clips

    def __getitem__(self, request: ClipRequest) -> ClipSample:
        epoch, index = request
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range 0..{len(self) - 1}")
        rng = np.random.default_rng([self.seed, epoch, index])
        if index < self.num_real:
            video = self.videos[index % len(self.videos)]
            picks = frame_indices(rng, len(video.frames), self.cfg.num_frames, self.max_gap(epoch))
            frames = [read_rgb(video.frames[i]) for i in picks]
            labels = read_labels(video.first_annotation)  # the only mask ever opened
            if labels.shape != frames[0].shape[:2]:
                raise ValueError(
                    f"{video.first_annotation}: mask {labels.shape} and frame "
                    f"{frames[0].shape[:2]} sizes differ"
                )
            name = video.name
        else:
            h, w = self.cfg.crop_size
            spec = ClipSpec(
                frames=self.cfg.num_frames, height=int(h * 1.25), width=int(w * 1.25),
                objects=int(rng.integers(1, self.cfg.max_objects + 1)),
                seed=int(rng.integers(0, 2**31)), occlusion=bool(rng.random() < 0.5),
            )
            clip = generate_clip(spec)
            frames, labels = list(clip.frames), clip.masks[0]
            name = f"synthetic-{spec.seed}"
        labels = choose_objects(rng, labels, self.cfg.max_objects)
        out_frames, out_labels, k = augment_clip(rng, frames, labels, self.cfg)
        return ClipSample(out_frames, out_labels, k, name)


def collate_clips(samples: list[ClipSample]) -> ClipBatch:
    """Stack samples; pad object slots to the batch's largest object count (at least 1)."""
    n = max(1, max(s.num_objects for s in samples))
    frames = torch.stack([normalize_image(np.ascontiguousarray(s.frames)) for s in samples])
    labels = torch.stack([torch.from_numpy(np.ascontiguousarray(s.labels)).long() for s in samples])
    ids = torch.arange(1, n + 1).view(1, n, 1, 1)
    first_masks = (labels.unsqueeze(1) == ids).float()
    valid = torch.tensor([[i < s.num_objects for i in range(n)] for s in samples], dtype=torch.bool)
    return ClipBatch(frames, first_masks, valid, tuple(s.name for s in samples))
