"""Resume restores every global RNG (torch, NumPy, Python) to where the interrupted run
was, so anything drawing from them (dropout, user augmentations) continues identically."""

from __future__ import annotations

import random

import numpy as np
import torch

import train.loop as loop

from .conftest import tiny_config, tiny_data


_REAL_LOSS = loop.cycle_loss


def _recording_loss(draws: list):
    real = _REAL_LOSS

    def loss(*args, **kwargs):
        # a consumer of the global RNGs at every step, as dropout or an augmentation would be
        draws.append((torch.rand(1).item(), float(np.random.rand()), random.random()))
        return real(*args, **kwargs)

    return loss


def test_resume_continues_the_global_rng_streams(tmp_path, monkeypatch):
    data = tiny_data(synthetic_clips=8)
    straight: list = []
    monkeypatch.setattr(loop, "cycle_loss", _recording_loss(straight))
    loop.train(tiny_config(tmp_path / "a", data, steps=4), progress_bar=False)

    resumed: list = []
    monkeypatch.setattr(loop, "cycle_loss", _recording_loss(resumed))
    cfg = tiny_config(tmp_path / "b", data, steps=4)
    loop.train(cfg, stop_after=2, progress_bar=False)
    # another process (or anything else) moves the global RNGs before the resume
    torch.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)
    loop.train(cfg, resume=tmp_path / "b" / "checkpoints" / "last.pth", progress_bar=False)

    assert len(straight) == len(resumed) == 4
    assert resumed == straight
