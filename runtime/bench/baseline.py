"""The eager baseline: the published inference schedule done the straightforward way.

PyTorch eager, float32, batch 1; memory kept by concatenating tensors at each memory frame
(it grows with the video); similarity against the whole memory as a dense (L, M) affinity
matrix (top-k, then a max-subtracted softmax scattered into it). Every benchmark report
shows the toolkit's configurations as a ratio to this, measured in the same run on the same
inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from stmae import STMAE
from stmae.readout import to_key_size, upsample_coarse

from ..engine.transforms import FrameGeometry


def dense_topk_readout(memory_keys: torch.Tensor, memory_values: torch.Tensor, query: torch.Tensor, top_k: int) -> torch.Tensor:
    """memory_keys (C, L), memory_values (N, L), query (C, M) -> (N, M), as the published
    code does it: a dense affinity with zeros off the top-k (stable softmax)."""
    sim = memory_keys.t() @ query  # (L, M)
    k = min(top_k, sim.shape[0])
    vals, idx = torch.topk(sim, k, dim=0)
    affinity = torch.zeros_like(sim).scatter_(0, idx, torch.softmax(vals, dim=0))
    return memory_values @ affinity


class EagerBaseline:
    """One video through the published schedule: frame 0's mask given, memory = frame 0
    and every ``mem_every``-th frame (unbounded, grown by concatenation), top-k readout.
    Pre- and post-processing are the runtime's (same resize, pad, unpad), so both sides of
    a comparison see identical network inputs. Same ``step`` interface as VideoSession."""

    name = "baseline"

    def __init__(self, model: STMAE, device: torch.device | str, size: int, mem_every: int, top_k: int, timer) -> None:
        self.model = model
        self.device = torch.device(device)
        self.size = size
        self.mem_every = mem_every
        self.top_k = top_k
        self.timer = timer
        self.geometry: FrameGeometry | None = None
        self.labels: list[int] = []
        self.keys: torch.Tensor | None = None  # (C, L), grows
        self.values: torch.Tensor | None = None  # (N, L), grows
        self.t = 0

    @torch.inference_mode()
    def step(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """rgb (H, W, 3) uint8; mask (H, W) uint8 labels at frame 0 only -> (H, W) uint8."""
        timer, t = self.timer, self.t
        with timer.stage("preprocess"):
            if self.geometry is None:
                self.geometry = FrameGeometry.for_frame(rgb.shape[0], rgb.shape[1], self.size)
            image = self.geometry.prepare_image(rgb, self.device)
        with timer.stage("key_encoder"):
            f16, f8, f4 = self.model.encode_key(image)
        key_hw = tuple(f16.shape[-2:])
        if t == 0:
            if mask is None:
                raise ValueError("the baseline needs the first frame's mask")
            with timer.stage("preprocess"):
                self.labels = [int(v) for v in np.unique(mask) if v != 0]
                prob_fg = self.geometry.prepare_masks(mask, self.labels, self.device)
            out = mask
        else:
            with timer.stage("memory_readout"):
                coarse = dense_topk_readout(self.keys, self.values, f16[0].flatten(1), self.top_k)
                coarse = coarse.view(1, -1, *key_hw)
            with timer.stage("mask_autoencoder"):
                coarse_up = upsample_coarse(coarse, image.shape[-2:])
                emb = self.model.encode_mask(image, f16, coarse_up)
                logits = self.model.decode(f16, f8, f4, emb)
                prob = self.model.aggregate(logits)[1]
            with timer.stage("postprocess"):
                prob_fg = prob[:, 1:]
                index = self.geometry.restore(prob)[0].argmax(0).cpu().numpy()
                out = np.array([0] + self.labels, dtype=np.uint8)[index]
        if t % self.mem_every == 0:
            with timer.stage("memory_readout"):
                k = f16[0].flatten(1)
                v = to_key_size(prob_fg, key_hw)[0].flatten(1)
                self.keys = k if self.keys is None else torch.cat([self.keys, k], dim=1)
                self.values = v if self.values is None else torch.cat([self.values, v], dim=1)
        self.t += 1
        return out
