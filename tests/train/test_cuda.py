"""Mixed-precision training on a GPU (fp16 autocast + GradScaler, and bf16)."""

from __future__ import annotations

import math

import pytest
import torch

from train.loop import checkpoint_path, train

from .conftest import tiny_config, tiny_data

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (mixed precision trains on GPUs only)"
)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_steps_and_resume(tmp_path, precision):
    cfg = tiny_config(tmp_path / precision, tiny_data(), steps=3, device="cuda", precision=precision)
    first = train(cfg, stop_after=2, progress_bar=False)
    assert math.isfinite(first.last_loss)
    assert next(first.network.parameters()).device.type == "cuda"
    second = train(cfg, resume=checkpoint_path(cfg), progress_bar=False)
    assert second.steps == 3 and math.isfinite(second.last_loss)
    saved = torch.load(checkpoint_path(cfg), weights_only=True)
    assert bool(saved["scaler"]) == (precision == "fp16")
    assert all(v.device.type == "cpu" for v in saved["network"].values())
