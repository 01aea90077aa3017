"""The two exported graphs: wrappers around :class:`stmae.STMAE` and their ONNX export.

- key encoder: image (B, 3, H, W) -> f16 (B, C16, H/16, W/16), f8, f4.
- mask autoencoder: image, f16, f8, f4, coarse (B, N, H/16, W/16) -> prob (B, N+1, H, W):
  the upsampling of the coarse masks, the "others" channel, mask encoder, decoder and soft
  aggregation are inside.

Exported with the torch.export-based exporter (``torch.onnx.export(dynamo=True)``, the
default and recommended path in torch 2.9+; ``dynamic_axes`` is deprecated there) and
``dynamic_shapes`` built from ``torch.export.Dim``: batch, object count and H, W (as
16 * h16, 16 * w16, so only multiples of 16 are accepted). Axis names are then made
uniform on every graph input and output ("batch", "objects", "16*h16", ...).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.export import Dim

from runtime.export_manifest import (
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    KEY_ENCODER,
    MASK_AUTOENCODER,
    TensorSpec,
)
from stmae.network import STMAE

from .options import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, TraceShape  # noqa: F401 (re-exported)

_DTYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
}


class KeyEncoderGraph(nn.Module):
    """forward(image (B, 3, H, W) float32) -> (f16, f8, f4) float32."""

    def __init__(self, model: STMAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        return self.model.encode_key(image)


class MaskAutoencoderGraph(nn.Module):
    """forward(image, f16, f8, f4, coarse (B, N, h, w)) -> prob (B, N+1, H, W) float32."""

    def __init__(self, model: STMAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, image, f16, f8, f4, coarse):
        return self.model.segment(image, f16, f8, f4, coarse)


# Names of the dynamic axes on every graph input/output (index -> name).
_AXES = {
    "image": {0: "batch", 2: "16*h16", 3: "16*w16"},
    "f16": {0: "batch", 2: "h16", 3: "w16"},
    "f8": {0: "batch", 2: "2*h16", 3: "2*w16"},
    "f4": {0: "batch", 2: "4*h16", 3: "4*w16"},
    "coarse": {0: "batch", 1: "objects", 2: "h16", 3: "w16"},
    "prob": {0: "batch", 1: "objects + 1", 2: "16*h16", 3: "16*w16"},
}


def _dims():
    batch = Dim("batch", min=1, max=1024)
    objects = Dim("objects", min=1, max=255)
    h16 = Dim("h16", min=1, max=512)
    w16 = Dim("w16", min=1, max=512)
    return batch, objects, h16, w16


def _export(module: nn.Module, args: tuple, names: str, dynamic_shapes: dict, opset: int) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            program = torch.onnx.export(
                module,
                args,
                input_names=list(GRAPH_INPUTS[names]),
                output_names=list(GRAPH_OUTPUTS[names]),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    model = program.model_proto
    got = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise ValueError(
            f"the exporter produced opset {got} for the {names} graph instead of {opset}; "
            f"choose --opset between {MIN_OPSET} and {MAX_OPSET}"
        )
    return model


def _rename_dims(model: onnx.ModelProto) -> None:
    """Give every graph input/output the axis names of ``_AXES`` and carry the renaming of
    the exporter's internal symbols (e.g. 's76' -> 'h16') over to value_info."""
    mapping: dict[str, str] = {}
    for value in list(model.graph.input) + list(model.graph.output):
        wanted = _AXES[value.name]
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if i in wanted:
                if dim.dim_param and dim.dim_param != wanted[i]:
                    mapping[dim.dim_param] = wanted[i]
                dim.ClearField("dim_value")
                dim.dim_param = wanted[i]
    if not mapping:
        return
    pattern = re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)))
    symbols = mapping
    for value in model.graph.value_info:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = symbols[dim.dim_param]
            elif dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: symbols[m.group(0)], dim.dim_param)


def export_key_encoder(model: STMAE, opset: int, trace: TraceShape) -> onnx.ModelProto:
    """The key-encoder graph as an ONNX ModelProto (weights inside)."""
    image = torch.randn(trace.batch, 3, trace.height, trace.width)
    batch, _, h16, w16 = _dims()
    shapes = {"image": {0: batch, 2: 16 * h16, 3: 16 * w16}}
    onnx_model = _export(KeyEncoderGraph(model).eval(), (image,), KEY_ENCODER, shapes, opset)
    _rename_dims(onnx_model)
    return onnx_model


def export_mask_autoencoder(model: STMAE, opset: int, trace: TraceShape) -> onnx.ModelProto:
    """The mask-autoencoder graph as an ONNX ModelProto (weights inside)."""
    image = torch.randn(trace.batch, 3, trace.height, trace.width)
    with torch.no_grad():
        f16, f8, f4 = model.encode_key(image)
    coarse = torch.rand(trace.batch, trace.objects, *f16.shape[-2:])
    batch, objects, h16, w16 = _dims()
    shapes = {
        "image": {0: batch, 2: 16 * h16, 3: 16 * w16},
        "f16": {0: batch, 2: h16, 3: w16},
        "f8": {0: batch, 2: 2 * h16, 3: 2 * w16},
        "f4": {0: batch, 2: 4 * h16, 3: 4 * w16},
        "coarse": {0: batch, 1: objects, 2: h16, 3: w16},
    }
    args = (image, f16, f8, f4, coarse)
    onnx_model = _export(MaskAutoencoderGraph(model).eval(), args, MASK_AUTOENCODER, shapes, opset)
    _rename_dims(onnx_model)
    return onnx_model


def check_graph(path: str | Path) -> onnx.ModelProto:
    """onnx.checker (full check) and strict shape inference on a saved graph; returns the
    model with inferred shapes. Raises onnx.checker.ValidationError / InferenceError."""
    path = str(path)
    onnx.checker.check_model(path, full_check=True)
    return onnx.shape_inference.infer_shapes(onnx.load(path), check_type=True, strict_mode=True)


def tensor_specs(values) -> tuple[TensorSpec, ...]:
    """TensorSpecs (name, dtype, named/static shape) of ONNX ValueInfos."""
    specs = []
    for value in values:
        ttype = value.type.tensor_type
        shape = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in ttype.shape.dim)
        dtype = _DTYPE_NAMES.get(ttype.elem_type, onnx.TensorProto.DataType.Name(ttype.elem_type).lower())
        specs.append(TensorSpec(name=value.name, dtype=dtype, shape=shape))
    return tuple(specs)


def graph_io(path: str | Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of a saved graph, without loading its weights."""
    model = onnx.load(str(path), load_external_data=False)
    return tensor_specs(model.graph.input), tensor_specs(model.graph.output)


def save_model(model: onnx.ModelProto, path: str | Path) -> None:
    """Save with the weights inside the file (graphs here stay far below 2 GB)."""
    onnx.save_model(model, str(path), save_as_external_data=False)
