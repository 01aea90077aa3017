"""GFLOP per frame of each stage, counted with torch.utils.flop_counter."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from stmae import STMAE
from stmae.readout import read_memory


@torch.inference_mode()
def stage_gflops(model: STMAE, height: int, width: int, objects: int, memory_frames: int, top_k: int | None = 30) -> dict[str, float]:
    """Counted GFLOP (1 multiply-add = 2 FLOP) per frame of key encoder, memory readout
    (against ``memory_frames`` frames of memory) and mask autoencoder, at a padded size
    (height, width multiples of 16). Runs on meta-free CPU tensors of the real shapes."""
    if height % 16 or width % 16:
        raise ValueError(f"height and width must be multiples of 16, got {height}x{width}")
    model = model.eval()
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, height, width, device=device)
    out: dict[str, float] = {}
    with FlopCounterMode(display=False) as counter:
        f16, f8, f4 = model.encode_key(image)
    out["key_encoder"] = counter.get_total_flops() / 1e9
    h, w = f16.shape[-2:]
    keys = f16.new_zeros(1, f16.shape[1], memory_frames * h * w)
    values = torch.zeros(1, objects, memory_frames * h * w, device=device)
    with FlopCounterMode(display=False) as counter:
        coarse = read_memory(f16, keys, values, top_k)
    out["memory_readout"] = counter.get_total_flops() / 1e9
    with FlopCounterMode(display=False) as counter:
        model.segment(image, f16, f8, f4, coarse)
    out["mask_autoencoder"] = counter.get_total_flops() / 1e9
    return out
