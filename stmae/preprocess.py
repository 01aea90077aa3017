"""Image normalization and pad-to-16 / unpad, exactly as the published contract."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(rgb: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB uint8 (H, W, 3) or (T, H, W, 3) -> normalized float32 (3, H, W) or (T, 3, H, W).

    Values are scaled to [0, 1], then normalized with the ImageNet mean and std.
    """
    x = torch.as_tensor(rgb, device=device)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected RGB uint8 frames, got dtype {x.dtype}")
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(f"expected frames shaped (H, W, 3) or (T, H, W, 3), got {tuple(x.shape)}")
    x = x.movedim(-1, -3).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class Padding:
    """Zero padding added to reach a multiple of ``divisor``: (left, right, top, bottom)."""

    left: int
    right: int
    top: int
    bottom: int

    @property
    def as_f_pad(self) -> tuple[int, int, int, int]:
        return (self.left, self.right, self.top, self.bottom)


def padding_for(height: int, width: int, divisor: int = 16) -> Padding:
    """Half of the padding before, the rest (the larger half) after."""
    ph = (divisor - height % divisor) % divisor
    pw = (divisor - width % divisor) % divisor
    return Padding(left=pw // 2, right=pw - pw // 2, top=ph // 2, bottom=ph - ph // 2)


def pad_to_multiple(x: torch.Tensor, divisor: int = 16) -> tuple[torch.Tensor, Padding]:
    """Zero-pad the last two dims of x (..., H, W) to multiples of ``divisor``."""
    pad = padding_for(x.shape[-2], x.shape[-1], divisor)
    if pad == Padding(0, 0, 0, 0):
        return x, pad
    return F.pad(x, pad.as_f_pad), pad


def unpad(x: torch.Tensor, pad: Padding) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on the last two dims of x."""
    h, w = x.shape[-2:]
    return x[..., pad.top : h - pad.bottom, pad.left : w - pad.right]
