"""TensorRT compatibility check that runs without TensorRT.

Every node of an exported graph must be an operator that TensorRT's ONNX parser supports,
within its documented restrictions, so a graph that would fail to build is caught on the
CPU at export time.

Source of the table: onnx-tensorrt ``docs/operators.md`` for TensorRT 10.15 ("TensorRT
10.15 supports operators in the inclusive range of opset 9 to opset 24"), the parser that
TensorRT 10.x/11 ships; the rows marked "Y" are listed below, the rows marked "N"
(Unique, DFT, Col2Im, Sequence*, ConvInteger, MatMulInteger, QLinearConv, ...) are not.
Only the restrictions that can affect graphs like ours are checked (Resize modes, TopK,
Q/DQ zero points, constant reduction axes, 2D/3D convolutions and pooling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

OPSET_RANGE = (9, 24)

SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
    BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor
    Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
    HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
    LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul
    Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
    QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
    Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
    ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization
    RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND
    Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth
    Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose
    Trilu Unsqueeze Upsample Where Xor
    """.split()
)

_RESIZE_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_REDUCE_OPS = {
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
}
_TOPK_MAX_K = 3840


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs (build-time constants)."""
    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attr(node, "value")
            if isinstance(value, onnx.TensorProto):
                out[node.output[0]] = numpy_helper.to_array(value)
    return out


def _node_problems(node: onnx.NodeProto, consts: dict[str, np.ndarray], where: str) -> list[str]:
    label = f"{where}: node {node.name or '<unnamed>'} ({node.op_type})"
    if node.domain not in ("", "ai.onnx"):
        return [f"{label}: custom-domain operator {node.domain}::{node.op_type} needs a TensorRT plugin"]
    op = node.op_type
    if op not in SUPPORTED_OPS:
        return [f"{label}: operator {op} is not supported by TensorRT's ONNX parser"]
    problems = []
    if op == "Resize":
        coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
        mode = _attr(node, "mode", "nearest")
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        if coord not in _RESIZE_COORD_MODES:
            problems.append(f"{label}: coordinate_transformation_mode={coord!r} is unsupported")
        if mode not in _RESIZE_MODES:
            problems.append(f"{label}: mode={mode!r} is unsupported (nearest or linear only)")
        if mode == "nearest" and nearest not in _RESIZE_NEAREST_MODES:
            problems.append(f"{label}: nearest_mode={nearest!r} is unsupported")
        if _attr(node, "antialias", 0):
            problems.append(f"{label}: antialiasing is unsupported")
        if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            problems.append(f"{label}: keep_aspect_ratio_policy must be 'stretch'")
    elif op == "TopK":
        if _attr(node, "sorted", 1) != 1:
            problems.append(f"{label}: sorted must be 1")
        k = consts.get(node.input[1]) if len(node.input) > 1 else None
        if k is None:
            problems.append(f"{label}: K must be a build-time constant")
        elif int(np.asarray(k).reshape(-1)[0]) >= _TOPK_MAX_K:
            problems.append(f"{label}: K must be less than {_TOPK_MAX_K}")
    elif op in ("QuantizeLinear", "DequantizeLinear"):
        if len(node.input) > 2 and node.input[2]:
            zp = consts.get(node.input[2])
            if zp is None or np.any(np.asarray(zp) != 0):
                problems.append(f"{label}: zero point must be a constant zero (symmetric quantization)")
    elif op in _REDUCE_OPS:
        if len(node.input) > 1 and node.input[1] and node.input[1] not in consts:
            problems.append(f"{label}: axes must be an initializer")
    elif op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
        kernel = _attr(node, "kernel_shape")
        if kernel is not None and len(kernel) not in (2, 3):
            problems.append(f"{label}: only 2D or 3D {op} is supported")
        if op in ("MaxPool", "AveragePool"):
            if len(node.output) > 1 and node.output[1]:
                problems.append(f"{label}: the Indices output is unsupported")
            dil = _attr(node, "dilations")
            if dil and any(d != 1 for d in dil):
                problems.append(f"{label}: dilations must be all ones")
    return problems


def _graph_problems(graph: onnx.GraphProto, where: str, local: set[tuple[str, str]]) -> list[str]:
    consts = _constants(graph)
    problems = []
    for node in graph.node:
        if (node.domain, node.op_type) in local:
            continue  # a call of a model-local function, checked through the function body
        problems.extend(_node_problems(node, consts, where))
        for attr in node.attribute:  # subgraphs of If / Loop / Scan
            if attr.type == onnx.AttributeProto.GRAPH:
                problems.extend(_graph_problems(attr.g, f"{where}/{node.name}.{attr.name}", local))
    return problems


def check_tensorrt_compatibility(model_or_path: onnx.ModelProto | str | Path) -> list[str]:
    """Problems that would stop TensorRT's ONNX parser (empty list: compatible).

    model_or_path: an ONNX ModelProto or the path of a .onnx file.
    """
    if isinstance(model_or_path, onnx.ModelProto):
        model, where = model_or_path, model_or_path.graph.name or "model"
    else:
        model, where = onnx.load(str(model_or_path)), Path(model_or_path).name
    problems = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not OPSET_RANGE[0] <= opset.version <= OPSET_RANGE[1]:
            problems.append(
                f"{where}: opset {opset.version} is outside TensorRT's supported range "
                f"{OPSET_RANGE[0]}..{OPSET_RANGE[1]}"
            )
    local = {(f.domain, f.name) for f in model.functions}
    for func in model.functions:  # the parser inlines model-local functions: check their nodes
        fake = onnx.helper.make_graph(list(func.node), func.name, [], [])
        problems.extend(_graph_problems(fake, f"{where}/function {func.name}", local))
    problems.extend(_graph_problems(model.graph, where, local))
    return problems
