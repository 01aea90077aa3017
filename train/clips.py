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

from .augment import colour_jitter_clip, colour_shortcut_clip, sample_warp, warp_image, warp_labels
from stmae.composite import Donor, composite_clip
from .config import MAX_CLIPS_PER_EPOCH, DataConfig
from .regions import region_labels
from .schedule import FrameSchedule
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

    def pin_memory(self) -> "ClipBatch":
        """Page-locked copies, so ``to(cuda, non_blocking=True)`` really overlaps; the
        DataLoader calls this for a custom batch type when ``pin_memory=True``."""
        return ClipBatch(self.frames.pin_memory(), self.first_masks.pin_memory(),
                         self.valid.pin_memory(), self.names)

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
    out_frames = colour_shortcut_clip(out_frames, rng, cfg.hue_shift, cfg.channel_shuffle, cfg.grayscale)
    return np.stack(out_frames), lut[out_labels], len(kept)


class OneShotClips(Dataset):
    """The epoch's clip list: every real video ``repeats`` times, then ``synthetic_clips``
    synthetic clips, then ``composite_clips`` multi-object clips (objects cut from other
    videos' first frames pasted into a real video), then ``region_clips`` clips that start
    at any frame of a real video with self-made colour-region labels (train/regions.py).
    ``max_gap(epoch)`` gives the gap schedule, ``num_frames(epoch)`` the clip length
    (default: ``cfg.num_frames`` throughout). Only first-frame annotations are ever
    opened."""

    def __init__(self, cfg: DataConfig, seed: int, max_gap: Callable[[int], int],
                 num_frames: Callable[[int], int] | None = None) -> None:
        self.cfg = cfg
        self.seed = seed
        self.max_gap = max_gap
        self.num_frames = num_frames or FrameSchedule(cfg, 1)
        self.strength = cfg.composite_strength  # how far pasted objects move, scale, turn
        self.videos: list[VideoEntry] = []
        for root in cfg.davis_roots:
            for resolution in cfg.davis_resolution.split(","):
                self.videos += list_videos(root, resolution, cfg.sequences, cfg.exclude_sequences)
        for root in cfg.youtube_roots:
            self.videos += list_videos(root, None, cfg.sequences, cfg.exclude_sequences)
        if not self.videos and not cfg.synthetic_clips:
            raise ValueError("no training videos were found in the given folders")
        if len(self) > MAX_CLIPS_PER_EPOCH:  # before the sampler draws a permutation of them
            raise ValueError(
                f"an epoch of {len(self)} clips ({len(self.videos)} videos x --repeats {cfg.repeats}, plus "
                f"{len(self) - self.num_real} made clips) is more than {MAX_CLIPS_PER_EPOCH}; lower --repeats"
            )

    @property
    def num_real(self) -> int:
        return len(self.videos) * self.cfg.repeats

    def __len__(self) -> int:
        return self.num_real + self.cfg.synthetic_clips + self.cfg.composite_clips + self.cfg.region_clips

    def _real_clip(self, rng: np.random.Generator, video: VideoEntry, epoch: int):
        picks = frame_indices(rng, len(video.frames), self.num_frames(epoch), self.max_gap(epoch))
        frames = [read_rgb(video.frames[i]) for i in picks]
        labels = read_labels(video.first_annotation)  # the only mask ever opened
        if labels.shape != frames[0].shape[:2]:
            raise ValueError(
                f"{video.first_annotation}: mask {labels.shape} and frame "
                f"{frames[0].shape[:2]} sizes differ"
            )
        return frames, labels

    def _donor(self, rng: np.random.Generator, video: VideoEntry) -> Donor | None:
        """One object of ``video``'s first frame (its first-frame annotation), or None."""
        labels = choose_objects(rng, read_labels(video.first_annotation), 1)
        if not labels.any():
            return None
        return Donor(read_rgb(video.frames[0]), labels == 1, video.name)

    def _composite(self, rng: np.random.Generator, epoch: int):
        cfg = self.cfg
        base = self.videos[int(rng.integers(len(self.videos)))]
        frames, labels = self._real_clip(rng, base, epoch)
        pasted = int(rng.integers(1, min(cfg.composite_objects, max(1, cfg.max_objects - 1)) + 1))
        labels = choose_objects(rng, labels, max(1, cfg.max_objects - pasted))
        others = [v for v in self.videos if v.name != base.name] or self.videos
        donors = []
        for i in rng.choice(len(others), size=pasted, replace=len(others) < pasted):
            donor = self._donor(rng, others[int(i)])
            if donor is not None:
                donors.append(donor)
        clip = composite_clip(rng, frames, labels, donors, self.strength)
        return list(clip.frames), clip.first_labels, f"composite-{base.name}+" + "+".join(clip.names)

    def _region_clip(self, rng: np.random.Generator, epoch: int):
        """Frames from a random start frame of a random video, played forwards or
        backwards; frame 0's labels are colour regions of that frame (no annotation)."""
        video = self.videos[int(rng.integers(len(self.videos)))]
        length = len(video.frames)
        order = list(range(length)) if rng.random() < 0.5 else list(range(length - 1, -1, -1))
        start = int(rng.integers(0, max(1, length - self.num_frames(epoch) + 1)))
        rest = order[start:]
        picks = [rest[i] for i in frame_indices(rng, len(rest), self.num_frames(epoch), self.max_gap(epoch))]
        frames = [read_rgb(video.frames[i]) for i in picks]
        return frames, region_labels(rng, frames[0], self.cfg.max_objects), f"regions-{video.name}-{picks[0]}"

    def __getitem__(self, request: ClipRequest) -> ClipSample:
        epoch, index = request
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range 0..{len(self) - 1}")
        rng = np.random.default_rng([self.seed, epoch, index])
        if index < self.num_real:
            video = self.videos[index % len(self.videos)]
            frames, labels = self._real_clip(rng, video, epoch)
            name = video.name
        elif index >= self.num_real + self.cfg.synthetic_clips + self.cfg.composite_clips:
            frames, labels, name = self._region_clip(rng, epoch)
        elif index >= self.num_real + self.cfg.synthetic_clips:
            frames, labels, name = self._composite(rng, epoch)
        else:
            h, w = self.cfg.crop_size
            spec = ClipSpec(
                frames=self.num_frames(epoch), height=int(h * 1.25), width=int(w * 1.25),
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
