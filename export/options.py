"""The export's option values and defaults, with no heavy imports (``stmae-export --help``
and :mod:`export.config` read them without loading torch, onnx or ModelOpt)."""

from __future__ import annotations

from dataclasses import dataclass

MIN_OPSET = 18  # the torch.export-based exporter emits opset-18 reductions (axes as inputs)
MAX_OPSET = 23  # newest opset ONNX Runtime 1.2x and the TensorRT 10.x parser both accept
DEFAULT_OPSET = 19  # ModelOpt AutoCast's minimum for fp16 graphs; TensorRT 10.x parses 9..24

# What stays float32 in the key encoder (export.fp32_islands).
KEY_FP32_POLICIES = ("none", "layer3", "all")
INT8_QUANTIZERS = ("modelopt", "onnxruntime")
# The int8 tool per target: ONNX Runtime's CPU provider fuses its QDQ quantizer's layout
# (a Q/DQ pair per reader, CSE off) into QLinearConv (measured 3.04x the eager baseline at
# 480p); ModelOpt's Q/DQ layout is what TensorRT expects and runs float convolutions on the
# CPU provider (measured 1.02x).
TARGETS = ("cpu", "tensorrt")
DEFAULT_TARGET = "cpu"
INT8_QUANTIZER_FOR_TARGET = {"cpu": "onnxruntime", "tensorrt": "modelopt"}


@dataclass(frozen=True)
class TraceShape:
    """Example sizes the graphs are traced at (every axis but channels is dynamic).
    batch and objects must be >= 2: torch.export specializes axes of size 0 and 1."""

    batch: int = 2
    objects: int = 2
    height: int = 64
    width: int = 96

    def __post_init__(self) -> None:
        if self.batch < 2 or self.objects < 2:
            raise ValueError("trace batch and objects must be >= 2 (size-1 axes get specialized)")
        if self.height % 16 or self.width % 16 or self.height < 32 or self.width < 32:
            raise ValueError(
                f"trace size must be multiples of 16 and at least 32, got {self.height}x{self.width}"
            )
