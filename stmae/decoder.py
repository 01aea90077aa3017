"""Mask decoder: (f16, f8, f4, mask embedding) -> per-object logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .modules import FeatureFusionBlock, UpsampleBlock


class Decoder(nn.Module):
    """forward(f16: (B, C16, h, w), f8: (B, C8, 2h, 2w), f4: (B, C4, 4h, 4w),
    g16: (B, N, value_dim, h, w)) -> logits (B, N, 16h, 16w) float32."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c16, c8, c4 = config.key_channels
        self.fuser = FeatureFusionBlock(c16, config.value_dim, config.value_dim, config.cbam_reduction)
        self.up_16_8 = UpsampleBlock(c8, config.value_dim, config.decoder_dim)
        self.up_8_4 = UpsampleBlock(c4, config.decoder_dim, config.decoder_dim)
        self.pred = nn.Conv2d(config.decoder_dim, 1, kernel_size=3, padding=1)

    def forward(
        self, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, g16: torch.Tensor
    ) -> torch.Tensor:
        b, n = g16.shape[:2]
        g = self.fuser(f16, g16)
        g = self.up_16_8(f8, g)
        g = self.up_8_4(f4, g)
        logits = self.pred(F.relu(g.flatten(0, 1)))
        logits = F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
        return logits.view(b, n, *logits.shape[-2:])
