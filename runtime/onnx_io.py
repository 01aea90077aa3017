"""The inputs and outputs of an ONNX file, read from its protobuf without the ``onnx`` package.

Only the few fields needed are decoded (ModelProto.graph -> GraphProto.input/output ->
ValueInfoProto name and tensor type); nodes and weights are skipped by their length
prefix, so this costs a memory map and a walk over the graph's top-level fields. Used by
:func:`runtime.export_manifest.load_manifest` to refuse a manifest whose declared shapes no
longer match its graphs (the runtime sizes its buffers from the manifest), or whose
precision is not the one the graphs compute in (:func:`precision_marks`).
"""

from __future__ import annotations

import mmap
from pathlib import Path

# onnx.TensorProto.DataType -> the manifest's dtype names (export.graphs._DTYPE_NAMES).
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
              10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


class OnnxReadError(ValueError):
    """The file is not an ONNX model this reader understands."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise OnnxReadError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited field)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise OnnxReadError("a field runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise OnnxReadError(f"unsupported wire type {wire}")
    if pos != end:
        raise OnnxReadError("a message runs past its end")


def _sub(buf, span, number: int) -> list[tuple[int, int]]:
    return [v for n, w, v in _fields(buf, *span) if n == number and w == 2]


def _value_info(buf, span) -> tuple[str, str, tuple[int | str, ...]]:
    name, dtype, shape = "", "undefined", []
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == 2:
            name = bytes(buf[value[0]:value[1]]).decode("utf-8")
        elif number == 2 and wire == 2:  # TypeProto
            for tensor in _sub(buf, value, 1):  # tensor_type
                for n, w, v in _fields(buf, *tensor):
                    if n == 1 and w == 0:
                        dtype = ELEM_TYPES.get(v, f"type{v}")
                    elif n == 2 and w == 2:  # TensorShapeProto
                        for dim in _sub(buf, v, 1):
                            entry: int | str = "?"
                            for dn, dw, dv in _fields(buf, *dim):
                                if dn == 1 and dw == 0:
                                    entry = dv
                                elif dn == 2 and dw == 2:
                                    entry = bytes(buf[dv[0]:dv[1]]).decode("utf-8")
                            shape.append(entry)
    return name, dtype, tuple(shape)


_FLOAT16 = 10
_QDQ_OPS = (b"QuantizeLinear", b"DequantizeLinear")


def _graph_span(buf) -> tuple[int, int]:
    graphs = _sub(buf, (0, len(buf)), 7)
    if len(graphs) != 1:
        raise OnnxReadError("no graph")
    return graphs[0]


def _mapped(path: str | Path, read):
    """``read(buf)`` over a read-only memory map of ``path``."""
    with open(path, "rb") as fh:
        try:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # empty file
            raise OnnxReadError(str(exc)) from None
        with data:
            buf = memoryview(data)
            try:
                return read(buf)
            finally:
                buf.release()


def precision_marks(path: str | Path) -> dict[str, bool]:
    """What a graph computes in: ``{"qdq": any QuantizeLinear/DequantizeLinear node (int8),
    "float16": any float16 initializer or Cast to float16}``. Raises OnnxReadError."""
    def read(buf) -> dict[str, bool]:
        marks = {"qdq": False, "float16": False}
        for number, wire, span in _fields(buf, *_graph_span(buf)):
            if wire != 2:
                continue
            if number == 1:  # NodeProto: op_type (4), attribute (5: name 1, i 3)
                op, to = b"", None
                for n, w, v in _fields(buf, *span):
                    if n == 4 and w == 2:
                        op = bytes(buf[v[0]:v[1]])
                    elif n == 5 and w == 2 and op in (b"", b"Cast"):
                        name, value = b"", None
                        for an, aw, av in _fields(buf, *v):
                            if an == 1 and aw == 2:
                                name = bytes(buf[av[0]:av[1]])
                            elif an == 3 and aw == 0:
                                value = av
                        if name == b"to":
                            to = value
                marks["qdq"] |= op in _QDQ_OPS
                marks["float16"] |= op == b"Cast" and to == _FLOAT16
            elif number == 5:  # TensorProto initializer: data_type (2)
                marks["float16"] |= any(n == 2 and w == 0 and v == _FLOAT16 for n, w, v in _fields(buf, *span))
        return marks

    return _mapped(path, read)


def graph_io(path: str | Path) -> tuple[list[tuple[str, str, tuple]], list[tuple[str, str, tuple]]]:
    """(inputs, outputs) of an ONNX file as (name, dtype, shape) with ints for static axes
    and names for dynamic ones. Raises OnnxReadError for a file it cannot parse."""
    def read(buf):
        graph = _graph_span(buf)
        return ([_value_info(buf, s) for s in _sub(buf, graph, 11)],
                [_value_info(buf, s) for s in _sub(buf, graph, 12)])

    return _mapped(path, read)
