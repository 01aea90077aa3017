"""Tiny on-disk video folders (DAVIS / YouTube-VOS layouts) and tiny training configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stmae.synthetic import ClipSpec, generate_clip
from train.config import DataConfig, OptimConfig, ScheduleConfig, TrainConfig


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)
    img.putpalette(palette)
    img.save(path)


def write_video_folder(
    root: Path, videos: dict[str, int], resolution: str | None = "240p", size=(48, 64),
    objects: int = 2, corrupt_later_masks: bool = True, seed: int = 0,
) -> Path:
    """Synthetic videos written as JPEG frames + palette PNG masks. With
    ``corrupt_later_masks`` every annotation after the first is a non-image file, so
    reading any of them fails loudly."""
    frame_root = root / "JPEGImages"
    anno_root = root / "Annotations"
    if resolution:
        frame_root, anno_root = frame_root / resolution, anno_root / resolution
    for v, (name, frames) in enumerate(videos.items()):
        clip = generate_clip(ClipSpec(frames=frames, height=size[0], width=size[1],
                                      objects=objects, seed=seed + v))
        (frame_root / name).mkdir(parents=True)
        (anno_root / name).mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(clip.frames[t]).save(frame_root / name / f"{t:05d}.jpg", quality=95)
            mask_path = anno_root / name / f"{t:05d}.png"
            if t == 0 or not corrupt_later_masks:
                write_palette_png(mask_path, clip.masks[t])
            else:
                mask_path.write_bytes(b"not a png: training must never open this mask")
    return root


@pytest.fixture
def tiny_davis(tmp_path) -> Path:
    return write_video_folder(tmp_path / "davis", {"alpha": 6, "beta": 5, "gamma": 7})


def tiny_config(output: Path, data: DataConfig, steps: int = 4, **kwargs) -> TrainConfig:
    """A small-preset CPU run on 32x48 crops that takes about a second per few steps."""
    defaults = dict(
        optim=OptimConfig(base_lr=1e-3, base_batch=2),
        schedule=ScheduleConfig(steps=steps, warmup_steps=1, decay_at=(max(1, steps - 1),)),
        model="small", batch_size=2, num_refs=2, seed=3, output_dir=str(output),
        device="cpu", precision="fp32", checkpoint_every=0, log_every=1,
    )
    defaults.update(kwargs)
    return TrainConfig(data=data, **defaults)


def tiny_data(**kwargs) -> DataConfig:
    defaults = dict(synthetic_clips=6, num_frames=3, max_objects=2, crop_size=(32, 48),
                    gap_start=1, gap_end=2)
    defaults.update(kwargs)
    return DataConfig(**defaults)
