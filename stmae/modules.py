"""Building blocks of the STMAE mask autoencoder, named as in the published checkpoints.

Every block that works "per object" takes tensors shaped (B, N, C, H, W) and applies the
same weights to every object (B*N flattened).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _flat(g: torch.Tensor) -> torch.Tensor:
    return g.flatten(0, 1)


def _unflat(x: torch.Tensor, batch: int, objects: int) -> torch.Tensor:
    return x.view(batch, objects, *x.shape[1:])


def upsample_groups(g: torch.Tensor, scale: int) -> torch.Tensor:
    """Bilinear x``scale`` upsampling (align_corners False) of g: (B, N, C, h, w)."""
    b, n = g.shape[:2]
    out = F.interpolate(_flat(g), scale_factor=float(scale), mode="bilinear", align_corners=False)
    return _unflat(out, b, n)


class GroupResBlock(nn.Module):
    """out = conv2(relu(conv1(relu(g)))) + skip, skip = g or downsample(g). g: (B, N, C, H, W)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # Registration order matters: it is the published state-dict order.
        self.downsample = None if in_dim == out_dim else nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        b, n = g.shape[:2]
        x = _flat(g)
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        skip = x if self.downsample is None else self.downsample(x)
        return _unflat(out + skip, b, n)


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = channels // reduction
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        scale = torch.sigmoid(avg + mx)[:, :, None, None]
        return x * scale


class _SpatialConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compressed = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(compressed))


class CBAM(nn.Module):
    """Channel gate then spatial gate, each multiplying its input. x: (B, C, H, W)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Fuse a shared image feature with per-object features.

    forward(x: (B, Cx, h, w), g: (B, N, Cg, h, w)) -> (B, N, out_dim, h, w):
    g = block1(cat[x, g]); g = block2(g + CBAM(g)).
    """

    def __init__(self, x_dim: int, g_in_dim: int, out_dim: int, reduction: int) -> None:
        super().__init__()
        self.block1 = GroupResBlock(x_dim + g_in_dim, out_dim)
        self.attention = CBAM(out_dim, reduction)
        self.block2 = GroupResBlock(out_dim, out_dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, n = g.shape[:2]
        shared = x.unsqueeze(1).expand(-1, n, -1, -1, -1)
        g = self.block1(torch.cat([shared, g], dim=2))
        r = _unflat(self.attention(_flat(g)), b, n)
        return self.block2(g + r)


class UpsampleBlock(nn.Module):
    """skip = skip_conv(f); g = up2(g) + skip (per object); out_conv(g).

    forward(skip_f: (B, Cs, 2h, 2w), g: (B, N, Cg, h, w)) -> (B, N, out_dim, 2h, 2w).
    """

    def __init__(self, skip_dim: int, g_dim: int, out_dim: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_dim, g_dim, 3, padding=1)
        self.out_conv = GroupResBlock(g_dim, out_dim)

    def forward(self, skip_f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        skip = self.skip_conv(skip_f)
        g = upsample_groups(g, 2) + skip.unsqueeze(1)
        return self.out_conv(g)
