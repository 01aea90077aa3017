"""The PyTorch (eager) backend: the STMAE module on a device.

precision 'fp32' runs everything in float32. On CUDA, 'fp16' or 'bf16' run the
convolutions under autocast in that dtype (keys come out in it); similarity, softmax and
aggregation stay float32 (the runtime's readout and :func:`stmae.aggregate.aggregate`).

"fp32" means IEEE float32 on CUDA too: TF32 (10-bit mantissa products in cuBLAS matrix
products and cuDNN convolutions, which PyTorch allows for convolutions by default) is
switched off when a backend is made, unless it is built with ``tf32=True``
(``--allow-tf32``). The switch is PyTorch's process-wide setting (:func:`set_cuda_tf32`).
"""

from __future__ import annotations

import contextlib

import torch

from stmae.network import STMAE
from stmae.readout import upsample_coarse

from ..errors import BackendUnavailable
from .base import KeyFeatures

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def set_cuda_tf32(allowed: bool) -> dict[str, bool]:
    """Allow or forbid TF32 in CUDA float32 matrix products (cuBLAS) and convolutions
    (cuDNN): a process-wide PyTorch setting that changes nothing on the CPU. Set through
    ``allow_tf32``, the flags ``torch.compile`` reads too (torch's newer
    ``fp32_precision`` settings follow them; mixing the two APIs is an error in recent
    torch, so this module uses only the first). Returns :func:`cuda_tf32_state`."""
    torch.backends.cuda.matmul.allow_tf32 = bool(allowed)
    torch.backends.cudnn.allow_tf32 = bool(allowed)
    return cuda_tf32_state()


def cuda_tf32_state() -> dict[str, bool]:
    """Whether TF32 is allowed now: {'matmul': cuBLAS float32 products, 'cudnn': cuDNN
    float32 convolutions}."""
    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn": bool(torch.backends.cudnn.allow_tf32)}


def resolve_device(device: str | torch.device) -> torch.device:
    """torch.device of a name, checking that CUDA is there when asked for."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BackendUnavailable(f"unknown device {device!r} ({exc}); use e.g. 'cpu' or 'cuda:0'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                f"device {device!r} asked for, but CUDA is not available here; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendUnavailable(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return dev


class TorchBackend:
    """Runs :class:`stmae.STMAE` eagerly.

    model: an STMAE; it is moved to ``device`` and put in eval mode (a training loop that
    validates with this backend calls ``model.train()`` again afterwards). tf32: allow TF32
    in CUDA float32 products and convolutions (default no: IEEE float32); applied with
    :func:`set_cuda_tf32` when the backend is made, whatever the device, so that every
    CUDA float32 computation in the process (the runtime's readout, an eager baseline)
    follows the same rule.
    """

    name = "torch"

    def __init__(self, model: STMAE, device: str | torch.device = "cpu", precision: str = "fp32",
                 tf32: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        if precision != "fp32" and self.device.type != "cuda":
            raise BackendUnavailable(
                f"precision {precision} needs a CUDA device (the torch backend runs fp32 on "
                f"{self.device.type}); use --precision fp32 or --device cuda"
            )
        self.precision = precision
        self.tf32 = bool(tf32)
        set_cuda_tf32(self.tf32)
        self.model = model.to(self.device).eval()
        self.config = model.config

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    @torch.inference_mode()
    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        """image (B, 3, H, W) float32 normalized -> f16, f8, f4 (compute dtype)."""
        with self._autocast():
            f16, f8, f4 = self.model.encode_key(image)
        return KeyFeatures(f16, f8, f4)

    @torch.inference_mode()
    def segment(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W), features of the same image, coarse (B, N, H/16, W/16)
        float32 -> probabilities (B, N+1, H, W) float32, background first."""
        with self._autocast():
            prob = self.model.segment(image, features.f16, features.f8, features.f4, coarse)
        return prob.float()

    @torch.inference_mode()
    def segment_logits(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        """The mask autoencoder without the aggregation: image (B, 3, H, W), features,
        coarse (B, N, H/16, W/16) float32 -> per-object logits (B, N, H, W) float32. The
        batched engine aggregates itself, over each stream's real objects only."""
        with self._autocast():
            coarse_up = upsample_coarse(coarse.float(), image.shape[-2:])
            embedding = self.model.encode_mask(image, features.f16, coarse_up)
            logits = self.model.decode(features.f16, features.f8, features.f4, embedding)
        return logits.float()
