"""Precision decided in the graph (TensorRT 10/11 strongly typed networks).

- fp16: NVIDIA ModelOpt ONNX AutoCast (``modelopt.onnx.autocast.convert_to_mixed_precision``)
  converts the graph to mixed fp16/fp32 with Cast nodes; named nodes stay float32. Graph I/O
  stays float32 (``keep_io_types``). (onnxconverter-common's float16 converter was tried as
  an alternative and dropped: with a node block list it writes type-inconsistent graphs.)
- int8: explicit Q/DQ nodes, symmetric int8 (zero points 0, as TensorRT requires), weights
  per channel, activations calibrated on real inputs; ModelOpt ONNX quantization
  (``modelopt.onnx.quantization.quantize``) or ONNX Runtime's QDQ quantizer
  (``onnxruntime.quantization.quantize_static``).

Which nodes must stay float32 is chosen by :mod:`export.fp32_islands` from the graphs'
namespaces and measured by the parity gate.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import onnx

from .feeds import Feed, FeedReader, FeedSpool
from .options import INT8_QUANTIZERS  # noqa: E402,F401 (re-exported)
INSTALL_EXPORT_EXTRA = 'pip install -e ".[export]"'
# ModelOpt's int8 quantizer patches ONNX Runtime's quantization classes for the rest of the
# process, after which ONNX Runtime's own QDQ quantizer fails; we refuse that combination.
_ORT_PATCHED_BY_MODELOPT = False


class PrecisionToolMissing(RuntimeError):
    """The tool chosen for a precision conversion is not installed."""


def _import_modelopt(what: str):
    try:
        import modelopt.onnx.autocast as autocast  # noqa: F401
        import modelopt.onnx.quantization as quantization  # noqa: F401
    except ImportError as exc:
        raise PrecisionToolMissing(
            f"{what} needs NVIDIA ModelOpt's ONNX tools ({exc}); install them with "
            f"{INSTALL_EXPORT_EXTRA}"
        ) from None
    _quiet_modelopt()
    return autocast, quantization


def _quiet_modelopt() -> None:
    """ModelOpt logs every node at INFO and expected fp16 notes at WARNING; keep errors."""
    from modelopt.onnx.logging_config import configure_logging

    configure_logging(logging.ERROR)


class _RootLogCapture:
    """Collect what a tool logs through the root logger (ONNX Runtime's quantizer writes
    'WARNING:root:' lines about its own internals) instead of printing it; the messages
    go into the manifest's precision details."""

    def __enter__(self) -> list[str]:
        self.messages: list[str] = []
        root = logging.getLogger()
        self._saved = (root.level, list(root.handlers))

        class _Collect(logging.Handler):
            def emit(handler, record: logging.LogRecord) -> None:  # noqa: N805
                self.messages.append(f"{record.levelname}: {record.getMessage()}")

        root.handlers = [_Collect(logging.WARNING)]
        root.setLevel(logging.WARNING)
        return self.messages

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        root.setLevel(self._saved[0])
        root.handlers = self._saved[1]


def modelopt_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("nvidia-modelopt")
    except Exception:
        return None


def convert_fp16(
    src: str | Path,
    dst: str | Path,
    feeds: FeedSpool | Sequence[Feed],
    keep_fp32_nodes: Sequence[str] = (),
) -> dict:
    """Write a mixed-precision fp16 copy of ``src`` to ``dst`` with ModelOpt AutoCast.

    feeds: real graph inputs {name: float32 array} for AutoCast's reference run (nodes whose
    values exceed the fp16-safe range stay float32), read one at a time (a
    :class:`export.feeds.FeedSpool`, or a list); the run keeps per-tensor minima and maxima,
    not activations (:mod:`export.autocast_reference`), so its memory is one inference,
    whatever the number of feeds. keep_fp32_nodes: exact node names that stay float32.
    Graph inputs and outputs stay float32. Returns details for the manifest.
    """
    if not len(feeds):
        raise ValueError("fp16 AutoCast needs at least one input feed for its reference run")
    keep = sorted(set(keep_fp32_nodes))
    autocast, _ = _import_modelopt("fp16 export through ModelOpt AutoCast")
    from .autocast_reference import streamed_reference_run

    with streamed_reference_run(feeds):
        model = _autocast(autocast, src, keep)
    model = refresh_value_info(model)
    onnx.save_model(model, str(dst), save_as_external_data=False)
    return {
        "tool": "nvidia-modelopt AutoCast",
        "tool_version": modelopt_version(),
        "reference_run": "one feed at a time, per-tensor min/max reduced in the graph (export/autocast_reference.py)",
        "calibration_feeds": len(feeds),
        "kept_float32_nodes": len(keep),
        "float16_compute_nodes": _count_fp16_compute(model),
    }


def refresh_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the intermediate shapes a converter wrote and infer them again.

    AutoCast writes one symbolic dim 'unk' for every axis it cannot name, so unrelated
    tensors claim equal sizes and ONNX Runtime's memory planner then reuses buffers of
    different sizes ("Shape mismatch attempting to re-use buffer").
    """
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, check_type=True)


def _autocast(autocast, src, keep: list[str]) -> onnx.ModelProto:
    _quiet_modelopt()
    return autocast.convert_to_mixed_precision(
        onnx_path=str(src),
        low_precision_type="fp16",
        # Exact names, as anchored regular expressions.
        nodes_to_exclude=[f"^{_escape(n)}$" for n in keep] or None,
        keep_io_types=True,
        # No file: the reference run is export.autocast_reference.streamed_reference_run's,
        # over the feeds bound to it.
        calibration_data=None,
        providers=["cpu"],
    )


def _escape(name: str) -> str:
    import re

    return re.escape(name)


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def _count_fp16_compute(model: onnx.ModelProto) -> dict[str, int]:
    """Conv/Gemm/MatMul nodes whose weight initializer is float16, by op type."""
    fp16_inits = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1:
            dtype = "fp16" if node.input[1] in fp16_inits else "fp32"
            key = f"{node.op_type}:{dtype}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def _ort_reader(feeds: FeedSpool | Sequence[Feed]):
    """An ONNX Runtime CalibrationDataReader that loads one feed at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(FeedReader, CalibrationDataReader):
        pass

    return _Reader(feeds)


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    feeds: FeedSpool | Sequence[Feed],
    keep_fp32_nodes: Sequence[str] = (),
    quantizer: str = "modelopt",
) -> dict:
    """Write a Q/DQ int8 copy of ``src`` to ``dst``, calibrated on ``feeds``.

    feeds: graph inputs {name: float32 array}, read one at a time (a
    :class:`export.feeds.FeedSpool`, or a list). Both calibrators reduce each tensor to its
    range in the graph and fold feed by feed (ONNX Runtime's MinMax: ReduceMin/ReduceMax
    outputs; ModelOpt patches it to compute ranges after every feed), so calibration holds
    one feed and one inference.

    Symmetric int8 activations and per-channel weights; nodes in ``keep_fp32_nodes`` are not
    quantized and everything that is not quantized stays float32. Returns manifest details.
    """
    if quantizer not in INT8_QUANTIZERS:
        raise ValueError(f"unknown int8 quantizer {quantizer!r}; choose one of {INT8_QUANTIZERS}")
    if not len(feeds):
        raise ValueError("int8 calibration needs at least one input feed")
    keep = sorted(set(keep_fp32_nodes))
    tool_messages: list[str] = []
    if quantizer == "modelopt":
        global _ORT_PATCHED_BY_MODELOPT
        _, quantization = _import_modelopt("int8 export through ModelOpt quantization")
        _ORT_PATCHED_BY_MODELOPT = True
        with tempfile.TemporaryDirectory(prefix="stmae-q-", dir=os.path.dirname(str(dst)) or None) as tmp:
            quantization.quantize(
                onnx_path=str(src),
                quantize_mode="int8",
                calibration_data_reader=_ort_reader(feeds),
                calibration_method="max",
                calibration_eps=["cpu"],
                nodes_to_exclude=[f"^{_escape(n)}$" for n in keep] or None,
                high_precision_dtype="fp32",
                # Weights stored as int8 initializers + DequantizeLinear (4x smaller files);
                # activations get Q/DQ pairs.
                dq_only=True,
                use_zero_point=False,
                output_path=str(dst),
                # CRITICAL: on a machine without a GPU, ModelOpt logs an ERROR about NVML;
                # real failures still raise.
                log_level="CRITICAL",
                log_file=os.path.join(tmp, "modelopt.log"),
            )
        tool, version = "nvidia-modelopt onnx.quantization", modelopt_version()
    else:
        if _ORT_PATCHED_BY_MODELOPT:
            raise RuntimeError(
                "ONNX Runtime's quantizer cannot run in a process where ModelOpt's quantizer "
                "already ran (ModelOpt patches ONNX Runtime's calibration); run the export "
                "again in a new process"
            )
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        with _RootLogCapture() as tool_messages:
            quantize_static(
                str(src),
                str(dst),
                _ort_reader(feeds),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=keep,
                # DedicatedQDQPair: a tensor read by two nodes (a residual block's input feeds
                # conv1 and the skip) gets a DequantizeLinear per reader. ONNX Runtime fuses
                # DQ -> Conv -> Q into QLinearConv only when the DQ has a single reader; with a
                # shared DQ those convolutions stayed float32 (measured: 11 of 35, 350 ms of the
                # 480x864 mask autoencoder's 750 ms). Sessions must switch off common
                # subexpression elimination, which merges the pairs back (see the manifest's
                # onnxruntime_disabled_optimizers).
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "DedicatedQDQPair": True},
            )
        tool, version = "onnxruntime.quantization quantize_static (QDQ)", _version("onnxruntime-gpu") or _version("onnxruntime")
    model = refresh_value_info(onnx.load(str(dst)))
    onnx.save_model(model, str(dst), save_as_external_data=False)
    qdq = sum(1 for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    return {
        "tool": tool,
        "tool_version": version,
        "scheme": "symmetric int8 (zero points 0), per-channel int8 weights, max calibration",
        "calibration_feeds": len(feeds),
        "kept_float32_nodes": len(keep),
        "qdq_nodes": qdq,
        "tool_messages": tool_messages,
    }
