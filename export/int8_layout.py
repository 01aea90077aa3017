"""The convolution weight layout of a CPU int8 graph, chosen by timing it on this machine.

ONNX Runtime's CPU provider runs a QLinearConv whose weights are symmetric (zero point 0)
with its own "symmetric convolution" kernels (AVX2/AVX512-VNNI), and one whose weights
have a non-zero zero point through im2col and its quantized GEMM, which uses AMX tiles
where the CPU has them. Which is faster depends on the CPU and the layer shapes:
measured on two Xeon cores with AMX at 480x864, the mask autoencoder ran 342 -> 289 ms
with shifted weights, while the key encoder went 134 -> 153 ms.

:func:`shift_weight_zero_points` rewrites every per-channel int8 convolution weight
(q, scale s, zero point 0) to (q', s', zero point 1) with s' = s * 127/126 and
q' = round(q * s / s') + 1, so q' stays in [-125, 127] and the dequantized weights move by
at most half a step of s' (a 0.8% coarser grid). :func:`choose_cpu_layout` times the
graph both ways with the runtime's session settings and keeps the faster one.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

SYMMETRIC = "symmetric weights (ONNX Runtime's symmetric int8 convolution kernels)"
SHIFTED = "weights with zero point 1 (ONNX Runtime's quantized GEMM: AMX where present)"


def shift_weight_zero_points(model: onnx.ModelProto) -> int:
    """Rewrite, in place, the per-channel int8 weights of 4-D convolution kernels (inputs
    of DequantizeLinear with an all-zero zero point) to zero point 1. Returns how many."""
    inits = {t.name: t for t in model.graph.initializer}
    shifted = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        q_name, s_name, z_name = node.input[:3]
        if q_name not in inits or s_name not in inits or z_name not in inits:
            continue
        q = numpy_helper.to_array(inits[q_name])
        zero = numpy_helper.to_array(inits[z_name])
        if q.dtype != np.int8 or q.ndim != 4 or zero.dtype != np.int8 or np.any(zero != 0):
            continue
        scale = numpy_helper.to_array(inits[s_name]).astype(np.float32)
        if scale.size not in (1, q.shape[0]):
            continue
        per_channel = scale.reshape(-1, 1, 1, 1)
        new_scale = per_channel * np.float32(127.0 / 126.0)
        weights = q.astype(np.float32) * per_channel
        q_new = np.clip(np.rint(weights / new_scale), -126, 126).astype(np.int32) + 1
        inits[q_name].CopyFrom(numpy_helper.from_array(q_new.astype(np.int8), q_name))
        inits[s_name].CopyFrom(numpy_helper.from_array(new_scale.reshape(scale.shape).astype(np.float32), s_name))
        inits[z_name].CopyFrom(numpy_helper.from_array(np.ones_like(zero), z_name))
        shifted += 1
    return shifted


def time_graph(path: str | Path, feed: dict[str, np.ndarray], disabled_optimizers: Sequence[str],
               threads: int | None = None, runs: int = 3) -> float:
    """Median milliseconds of ``runs`` CPU-provider runs of the graph at ``path`` on ``feed``
    (after one untimed run), with the runtime's CPU session options and the given disabled
    optimizers (``threads``: intra-op threads, default the usable cores)."""
    import onnxruntime as ort

    from runtime.backends.ort_backend import available_cpu_cores, session_options

    options = session_options(ort, threads or available_cpu_cores(), allow_spinning=False)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(disabled_optimizers))
    session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def choose_cpu_layout(path: str | Path, feed: dict[str, np.ndarray], disabled_optimizers: Sequence[str],
                      threads: int | None = None) -> dict:
    """Time the int8 graph at ``path`` as it is and with shifted weight zero points; leave
    the faster at ``path``. Returns what was measured and chosen (for the manifest)."""
    path = Path(path)
    model = onnx.load(str(path))
    shifted_model = onnx.ModelProto()
    shifted_model.CopyFrom(model)
    count = shift_weight_zero_points(shifted_model)
    if count == 0:
        return {"layout": SYMMETRIC, "shifted_convolutions": 0, "note": "no symmetric int8 convolution weights"}
    candidate = path.with_name(path.stem + ".shifted.onnx")
    onnx.save_model(shifted_model, str(candidate))
    try:
        ms_symmetric = time_graph(path, feed, disabled_optimizers, threads)
        ms_shifted = time_graph(candidate, feed, disabled_optimizers, threads)
        if ms_shifted < ms_symmetric:
            candidate.replace(path)
        shape = {name: list(array.shape) for name, array in feed.items()}
        return {
            "layout": SHIFTED if ms_shifted < ms_symmetric else SYMMETRIC,
            "shifted_convolutions": count,
            "timed_ms": {"symmetric": round(ms_symmetric, 3), "zero_point_1": round(ms_shifted, 3)},
            "timed_on": shape,
        }
    finally:
        candidate.unlink(missing_ok=True)
