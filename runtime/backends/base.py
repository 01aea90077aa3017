"""The protocol every inference backend implements (torch, ONNX Runtime, TensorRT).

A backend runs the two network graphs; the runtime keeps the memory bank and does the
memory readout itself, in float32, on ``backend.device``:

1. ``encode_key(image)`` -- the key encoder graph.
2. (runtime) coarse masks = top-k readout of the memory bank with the query's f16.
3. ``segment(image, features, coarse)`` -- the mask autoencoder graph.

All tensors are ``torch.Tensor`` on ``backend.device`` (backends that compute elsewhere,
e.g. ONNX Runtime on the CPU, wrap their outputs without copying where they can).

Optional: ``segment_logits(image, features, coarse)`` -> per-object logits (B, N, H, W)
float32, the mask autoencoder before aggregation (the torch backend has it). With it the
batched engine (:mod:`runtime.engine.stream_engine`) runs the mask autoencoder once on all (stream,
object) pairs padded to the bucket and aggregates each stream's real objects itself;
without it, each stream's objects go through ``segment`` on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class KeyFeatures:
    """Key-encoder outputs of one frame batch.

    f16: (B, C16, H/16, W/16); f8: (B, C8, H/8, W/8); f4: (B, C4, H/4, W/4).
    dtype is the backend's compute dtype (float32, or float16/bfloat16 on request).
    """

    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor


@runtime_checkable
class Backend(Protocol):
    """name: e.g. 'torch', 'onnxruntime', 'tensorrt'; device: where tensors live;
    precision: 'fp32', 'fp16', 'bf16' or 'int8' (what the convolutions run in).
    Optional: readout_bf16_products (bool, default False): the CPU memory readout may
    multiply bf16-rounded keys (float32 accumulation); set by ONNX Runtime int8 exports."""

    name: str
    device: torch.device
    precision: str

    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        """image: (B, 3, H, W) float32, normalized, H and W multiples of 16."""
        ...

    def segment(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, H, W) float32; coarse: (B, N, H/16, W/16) float32 coarse masks
        -> probabilities with background first (B, N+1, H, W) float32."""
        ...
