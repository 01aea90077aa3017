"""Readout kernels: the batched, masked top-k readout (torch reference, fused Triton
kernel, and the dispatcher between them) and the key-precision agreement measure.

``triton`` is imported only when the Triton kernel is used."""

from .topk import TRITON_MAX_TOP_K, choose_backend, topk_readout, topk_readout_torch, triton_available

__all__ = ["TRITON_MAX_TOP_K", "choose_backend", "topk_readout", "topk_readout_torch", "triton_available"]
