"""The STMAE network: stateless stages over one set of weights.

The module keeps no state between calls; per-video memory lives in the runtime.
Stages (B = batch, N = objects, H, W multiples of 16, h = H/16, w = W/16):

- :meth:`STMAE.encode_key`: image (B, 3, H, W) -> f16, f8, f4.
- :func:`stmae.readout.read_memory`: query f16, memory keys, memory values, top-k ->
  coarse masks (B, N, h, w) (exposed here as :meth:`STMAE.read_memory`).
- :meth:`STMAE.encode_mask`: image, f16, coarse masks at full size -> embedding.
- :meth:`STMAE.decode`: f16, f8, f4, embedding -> per-object logits (B, N, H, W).
- :func:`stmae.aggregate.aggregate`: logits -> probabilities with background first.
"""

from __future__ import annotations

import torch
from torch import nn

from .aggregate import aggregate
from .config import ModelConfig
from .decoder import Decoder
from .encoders import ValueEncoder, make_key_encoder
from .readout import read_memory, upsample_coarse


def others_channel(masks: torch.Tensor) -> torch.Tensor:
    """For each object, the sum of the other objects' masks. masks: (B, N, H, W)."""
    return masks.sum(dim=1, keepdim=True) - masks


class STMAE(nn.Module):
    """Key encoder + mask autoencoder (mask encoder and decoder)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.key_encoder = make_key_encoder(self.config.key_backbone)
        self.value_encoder = ValueEncoder(self.config)
        self.decoder = Decoder(self.config)

    def encode_key(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image: (B, 3, H, W) normalized float -> f16 (B, C16, H/16, W/16),
        f8 (B, C8, H/8, W/8), f4 (B, C4, H/4, W/4); published C = 1024, 512, 256."""
        return self.key_encoder(image)

    @staticmethod
    def read_memory(
        query_key: torch.Tensor,
        memory_keys: torch.Tensor,
        memory_values: torch.Tensor,
        top_k: int | None = 30,
    ) -> torch.Tensor:
        """query_key (B, C, h, w), memory_keys (B, C, L), memory_values (B, N, L) ->
        coarse masks (B, N, h, w) float32. Float32 similarity and top-k softmax."""
        return read_memory(query_key, memory_keys, memory_values, top_k)

    def encode_mask(
        self, image: torch.Tensor, f16: torch.Tensor, coarse_up: torch.Tensor
    ) -> torch.Tensor:
        """image (B, 3, H, W), f16 (B, C16, h, w), coarse masks at full size (B, N, H, W)
        -> mask embedding (B, N, value_dim, h, w). A single object gets zeros as others."""
        coarse_up = coarse_up.to(image.dtype)
        return self.value_encoder(image, f16, coarse_up, others_channel(coarse_up))

    def decode(
        self, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        """-> per-object logits (B, N, H, W)."""
        return self.decoder(f16, f8, f4, embedding)

    @staticmethod
    def aggregate(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (B, N, H, W) -> (aggregated logits, probabilities), (B, N+1, H, W) float32."""
        return aggregate(logits)

    def segment(
        self,
        image: torch.Tensor,
        f16: torch.Tensor,
        f8: torch.Tensor,
        f4: torch.Tensor,
        coarse: torch.Tensor,
    ) -> torch.Tensor:
        """The mask autoencoder end to end, as exported to ONNX.

        image (B, 3, H, W), f16/f8/f4 from :meth:`encode_key`, coarse masks at key size
        (B, N, h, w) -> probabilities with background first (B, N+1, H, W) float32.
        """
        coarse_up = upsample_coarse(coarse.float(), image.shape[-2:])
        embedding = self.encode_mask(image, f16, coarse_up)
        logits = self.decode(f16, f8, f4, embedding)
        return aggregate(logits)[1]

    def forward(self, *args, **kwargs):  # pragma: no cover - guidance only
        raise TypeError(
            "STMAE has no single forward pass; call encode_key, read_memory, encode_mask, "
            "decode and aggregate (or segment) explicitly"
        )
