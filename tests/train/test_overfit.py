"""The loss falls on a tiny clip set the model can overfit (no augmentation)."""

from __future__ import annotations

import csv

from train.config import OptimConfig, ScheduleConfig
from train.loop import train

from .conftest import tiny_config, tiny_data, write_video_folder


def test_loss_falls_on_a_tiny_clip_set(tmp_path):
    # Two 3-frame videos with 3 frames per clip: the clips never change.
    root = write_video_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(32, 48), objects=2)
    data = tiny_data(davis_roots=(str(root),), davis_resolution="240p", synthetic_clips=0,
                     crop_scale=(1.0, 1.0), hflip=False, affine_degrees=0.0, affine_shear=0.0,
                     color_jitter=0.0)
    steps = 40
    cfg = tiny_config(tmp_path / "run", data, steps=steps, log_every=5,
                      optim=OptimConfig(base_lr=3e-4, base_batch=2),
                      schedule=ScheduleConfig(steps=steps, warmup_steps=0, decay_at=(steps,)))
    result = train(cfg, progress_bar=False)
    with open(tmp_path / "run" / "train_log.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses) == steps // 5
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.last_loss == losses[-1]
    # The checkpoint records the resolution it trained at (240p frames) for --size auto.
    from stmae import load_checkpoint

    assert load_checkpoint(result.checkpoint).processing_size == 240
