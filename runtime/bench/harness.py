"""Run configurations over one clip and measure them against the eager baseline.

Every configuration and the baseline see the same frames (decoded from the same files),
the same first mask and the same schedule, in one process, one after another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from ..config import SessionConfig
from ..io.mask_io import write_mask
from .memory import PeakMemory
from .stats import LatencyStats, StageTimer


@dataclass(frozen=True)
class RunSpec:
    """One configuration to measure: backend 'torch' | 'onnxruntime' | 'tensorrt';
    precision (torch: fp32, or fp16/bf16 on CUDA); export_dir for exported backends."""

    backend: str
    precision: str = "fp32"
    export_dir: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnxruntime", "tensorrt"):
            raise ValueError(f"unknown backend {self.backend!r}; choose torch, onnxruntime or tensorrt")
        if self.backend != "torch" and not self.export_dir:
            raise ValueError(f"the {self.backend} backend needs an export folder: {self.backend}:DIR (made by stmae-export)")

    @classmethod
    def parse(cls, text: str) -> "RunSpec":
        """'torch:fp32', 'torch:fp16', 'onnxruntime:EXPORT_DIR', 'tensorrt:EXPORT_DIR'."""
        backend, _, rest = text.partition(":")
        if backend == "torch":
            return cls("torch", rest or "fp32")
        return cls(backend, "", rest or None)


# Count bounds of the benchmark flags, checked before anything is drawn or allocated.
MAX_FRAMES = 100_000
MAX_REPEATS = 100
SYNTHETIC_CLIP_BYTES = 8 << 30  # a synthetic clip is drawn whole in memory (H x W x 3 uint8 a frame)


def check_counts(frames: int, warmup: int, repeats: int, synthetic_sizes: tuple[int, ...] = (), streams: int = 1) -> None:
    """ValueError (one line, naming the flag) unless ``--frames``, ``--warmup`` and
    ``--repeats`` are in range and, for synthetic clips (``synthetic_sizes``, 16:9 at each
    shorter side; ``streams`` clips of each), the clips fit in memory."""
    if not isinstance(frames, int) or not 3 <= frames <= MAX_FRAMES:
        raise ValueError(f"--frames must be in 3..{MAX_FRAMES}, got {frames!r}")
    if not isinstance(warmup, int) or not 1 <= warmup <= frames - 2:
        raise ValueError(f"--warmup must be in 1..frames-2 ({frames - 2}), got {warmup!r}")
    if not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"--repeats must be in 1..{MAX_REPEATS}, got {repeats!r}")
    for size in synthetic_sizes:
        need = streams * frames * size * int(round(size * 16 / 9)) * 3
        if need > SYNTHETIC_CLIP_BYTES:
            raise ValueError(
                f"--frames {frames} at --sizes {size}" + (f" for {streams} streams" if streams > 1 else "")
                + f" needs {need / (1 << 30):.1f} GiB of synthetic frames in memory (at most "
                f"{SYNTHETIC_CLIP_BYTES >> 30} GiB): use fewer frames or a smaller size"
            )


@dataclass(frozen=True)
class ClipSettings:
    """frames: clip length; warmup: leading frames left out of the statistics (frame 0,
    which only encodes its key, is always left out); session: schedule and size."""

    frames: int = 30
    warmup: int = 3
    session: SessionConfig = field(default_factory=SessionConfig)

    def __post_init__(self) -> None:
        check_counts(self.frames, self.warmup, 1)


def read_rgb(path: Path) -> np.ndarray:
    """Decode a frame file to (H, W, 3) uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read frame {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass
class ClipMeasurement:
    """Measured over the frames after warm-up. Times in ms; memory in MiB."""

    fps: float
    frame_ms: dict
    stages: dict
    per_frame_ms: list[float]
    peak_rss_mb: float
    peak_cuda_mb: float | None
    memory_frames_mean: float
    masks: list[np.ndarray] = field(repr=False)


def measure_clip(
    make_runner: Callable[[StageTimer], object],
    frames: list[Path],
    first_mask: np.ndarray,
    settings: ClipSettings,
    device: torch.device,
    out_dir: Path,
) -> ClipMeasurement:
    """make_runner(timer) -> an object with ``step(rgb, mask) -> labels`` (a VideoSession
    adapter or the EagerBaseline). Each frame: decode, step, encode (palette PNG written
    to ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timer = StageTimer(device)
    runner = make_runner(timer)
    per_frame: list[float] = []
    masks: list[np.ndarray] = []
    with PeakMemory(device) as peak:
        for i, path in enumerate(frames):
            timer.begin_frame()
            start = time.perf_counter()
            with timer.stage("decode"):
                rgb = read_rgb(path)
            labels = runner.step(rgb, first_mask if i == 0 else None)
            with timer.stage("encode"):
                write_mask(out_dir / f"{i:05d}.png", labels)
            per_frame.append(time.perf_counter() - start)
            masks.append(labels)
    w = settings.warmup
    measured = per_frame[w:]
    stages = timer.per_frame_summary(skip=w)
    mem_frames = [1 + i // settings.session.mem_every for i in range(w, len(frames))]
    return ClipMeasurement(
        fps=len(measured) / sum(measured),
        frame_ms=LatencyStats.of(measured).__dict__,
        stages=stages,
        per_frame_ms=[s * 1e3 for s in per_frame],
        peak_rss_mb=peak.peak_rss_mb,
        peak_cuda_mb=peak.peak_cuda_mb,
        memory_frames_mean=float(np.mean([min(m, settings.session.max_memory_frames + 1) for m in mem_frames])),
        masks=masks,
    )


def mean_iou(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean IoU over frames 1.. and every label present in either sequence (frame 0 is
    the given mask on both sides)."""
    ious = []
    for x, y in list(zip(a, b))[1:]:
        for label in set(np.unique(x).tolist()) | set(np.unique(y).tolist()):
            if label == 0:
                continue
            inter = np.logical_and(x == label, y == label).sum()
            union = np.logical_or(x == label, y == label).sum()
            ious.append(inter / union)
    return float(np.mean(ious)) if ious else 1.0


def drift_ratio(per_frame_ms: list[float], window: int = 100, start: int = 1) -> float | None:
    """Median per-frame time of the last ``window`` frames over the ``window`` frames from
    ``start`` (default: the first after frame 0); None when the clip is too short for the
    two windows not to overlap."""
    if len(per_frame_ms) < start + 2 * window:
        return None
    first = np.median(per_frame_ms[start : start + window])
    last = np.median(per_frame_ms[-window:])
    return float(last / first)
