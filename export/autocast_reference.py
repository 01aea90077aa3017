"""AutoCast's reference run in bounded memory: one feed at a time, reduced in the graph.

ModelOpt AutoCast (``convert_to_mixed_precision``) keeps a node float32 when a tensor it
reads or writes exceeds ``data_max`` (512) on the calibration inputs. To learn the ranges,
its ``ReferenceRunner`` marks every tensor of the graph as a graph output (polygraphy
``MARK_ALL``), runs *all* calibration feeds through ONNX Runtime with polygraphy's
``Comparator``, which keeps every output of every feed, and only then reduces each tensor to
``TensorStats`` (absmax, min, max, shape). Its memory is every activation of one feed times
the number of feeds: for the published architecture at 853x480 (padded to 864x480), 0.83 GB
a frame for the key encoder and 1.76 GB for the mask autoencoder (2 objects), so the default
16 frames need about 13 and 26 GB (the export was killed at 17.5 GB on a 24 GB machine).

:func:`tensor_stats` computes the same statistics with the memory of one inference: each
tensor ModelOpt would mark (the graph inputs and every non-Constant node output) gets a
``ReduceMin``, a ``ReduceMax`` (scalars) and a ``Shape`` right after the node that makes it;
those are the only graph outputs, so ONNX Runtime frees activations as in a plain run. Feeds
are read one at a time and folded into running statistics. Minimum and maximum over feeds
are exact, so the statistics, and the nodes AutoCast keeps float32, are the ones ModelOpt's
runner gives (tests/export/test_export_memory.py compares the converted graphs).

:func:`streamed_reference_run` makes ``convert_to_mixed_precision`` use it: for the call,
``modelopt.onnx.autocast.convert.ReferenceRunner`` is replaced by a subclass whose ``run``
calls :func:`tensor_stats` on the model AutoCast prepared (sanitized, types inferred). The
replacement is checked: a ModelOpt whose ``convert`` module no longer uses that name is
refused, and a conversion that did not call the runner raises.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper

# Element types ReduceMin/ReduceMax take as they are on ONNX Runtime's CPU provider; other
# numeric types are cast first (exactly: every value fits float32/float64).
_REDUCE_AS_IS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT32, TensorProto.INT64}
_CAST_TO_FLOAT = {TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.BOOL, TensorProto.INT8, TensorProto.UINT8,
                  TensorProto.INT16, TensorProto.UINT16}
_CAST_TO_DOUBLE = {TensorProto.UINT32, TensorProto.UINT64}
_SUFFIX = "__stmae_stat"
_PATCH_LOCK = threading.Lock()


def reference_tensors(model: onnx.ModelProto) -> list[str]:
    """The tensors ModelOpt's reference run records: graph inputs, then every output of every
    node but Constant nodes (polygraphy ``all_tensor_names``), in graph order."""
    names = [i.name for i in model.graph.input]
    names += [o for n in model.graph.node if n.op_type != "Constant" for o in n.output if o]
    return list(dict.fromkeys(names))


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """{tensor: element type} from the model's type annotations, completed by shape
    inference where they are missing."""
    def known(m: onnx.ModelProto) -> dict[str, int]:
        return {vi.name: vi.type.tensor_type.elem_type
                for vi in (*m.graph.input, *m.graph.value_info, *m.graph.output)
                if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type}

    types = known(model)
    if any(o not in types for n in model.graph.node for o in n.output if o):
        try:
            types = {**known(onnx.shape_inference.infer_shapes(model)), **types}
        except Exception:  # noqa: BLE001 (unknown types fall back to raw outputs)
            pass
    return types


def augment(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, tuple[str, ...]]]:
    """A copy of ``model`` whose only outputs are, for each tensor of :func:`reference_tensors`,
    its minimum, maximum and shape (inserted right after the node that makes it), or the
    tensor itself where its element type is unknown or not numeric. Returns the model and
    {tensor: (min, max, shape) output names, or (tensor,)}."""
    types = _elem_types(model)
    out = copy.deepcopy(model)
    from modelopt.onnx.utils import clear_stale_value_info  # what ModelOpt's runner does first

    clear_stale_value_info(out)
    del out.graph.output[:]
    wanted = reference_tensors(model)
    plan: dict[str, tuple[str, ...]] = {}
    extra: dict[str, list[onnx.NodeProto]] = {}
    for name in wanted:
        elem = types.get(name)
        stat = f"{name}{_SUFFIX}"
        if elem in _REDUCE_AS_IS or elem in _CAST_TO_FLOAT or elem in _CAST_TO_DOUBLE:
            nodes, src = [], name
            if elem not in _REDUCE_AS_IS:
                src = f"{stat}_cast"
                to = TensorProto.FLOAT if elem in _CAST_TO_FLOAT else TensorProto.DOUBLE
                nodes.append(helper.make_node("Cast", [name], [src], name=src, to=to))
            nodes += [
                helper.make_node("ReduceMin", [src], [f"{stat}_min"], name=f"{stat}_min", keepdims=0),
                helper.make_node("ReduceMax", [src], [f"{stat}_max"], name=f"{stat}_max", keepdims=0),
                helper.make_node("Shape", [name], [f"{stat}_shape"], name=f"{stat}_shape"),
            ]
            plan[name] = (f"{stat}_min", f"{stat}_max", f"{stat}_shape")
        else:
            nodes = []
            plan[name] = (name,)
        extra[name] = nodes
    nodes = [n for name in model.graph.input for n in extra.pop(name.name, [])]
    for node in model.graph.node:
        nodes.append(node)
        if node.op_type != "Constant":
            nodes += [n for o in node.output if o for n in extra.pop(o, [])]
    del out.graph.node[:]
    out.graph.node.extend(nodes)  # copies
    out.graph.output.extend(onnx.ValueInfoProto(name=o) for outs in plan.values() for o in outs)
    return out, plan


class _Running:
    """Statistics of one tensor folded over feeds: ModelOpt's TensorStats fields."""

    __slots__ = ("absmax", "min_val", "max_val", "shape")

    def __init__(self) -> None:
        self.absmax, self.min_val, self.max_val, self.shape = -np.inf, np.inf, -np.inf, None

    def add(self, lo, hi, shape: tuple[int, ...]) -> None:
        if self.shape is None:
            self.shape = shape
        if int(np.prod(shape)) == 0:  # ModelOpt: an empty tensor counts as 0, 0, 0
            lo = hi = 0
        self.absmax = max(self.absmax, abs(lo), abs(hi))
        self.min_val = min(self.min_val, lo)
        self.max_val = max(self.max_val, hi)


def tensor_stats(model: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]]) -> OrderedDict:
    """{tensor name: modelopt TensorStats} over ``feeds`` for every tensor ModelOpt's reference
    run records, running one feed at a time on ONNX Runtime's CPU provider."""
    import onnxruntime as ort
    from modelopt.onnx.autocast.referencerunner import TensorStats

    augmented, plan = augment(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Each statistic must run soon after the node that makes its tensor, or every tensor
    # stays alive to the end of the run. ONNX Runtime's default order is a depth-first walk
    # from the graph's leaves that reaches the statistics (all leaves) only after the whole
    # graph; the priority-based order takes ready nodes in graph order. Measured on the
    # published mask autoencoder, one 480x864 feed with 2 objects: +0.6 GB over building the
    # session (a plain inference: +0.76 GB), where ModelOpt's runner returns every tensor.
    # Graph optimizations stay on, as in ModelOpt's run: every tensor has an extra reader in
    # both, so ONNX Runtime fuses the same nodes and the ranges are ModelOpt's to the bit
    # (with optimizations off they differ by float32 rounding, 1e-4 relative, for 0.6 GB less).
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    session = ort.InferenceSession(augmented.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    del augmented
    names = [o.name for o in session.get_outputs()]
    index = {name: i for i, name in enumerate(names)}
    running = OrderedDict((name, _Running()) for name in plan)
    count = 0
    for feed in feeds:
        values = session.run(names, feed)
        for name, outs in plan.items():
            if len(outs) == 3:
                lo, hi, shape = (values[index[o]] for o in outs)
                running[name].add(lo.item(), hi.item(), tuple(int(s) for s in shape))
            else:
                raw = np.asarray(values[index[outs[0]]])
                empty = raw.size == 0
                running[name].add(0 if empty else raw.min().item(), 0 if empty else raw.max().item(), raw.shape)
        del values, feed
        count += 1
    if not count:
        raise ValueError("AutoCast's reference run needs at least one feed")
    return OrderedDict(
        (name, TensorStats(absmax=r.absmax, min_val=r.min_val, max_val=r.max_val, shape=r.shape))
        for name, r in running.items()
    )


@contextmanager
def streamed_reference_run(feeds: Iterable[dict[str, np.ndarray]]) -> Iterator[None]:
    """Within the block, ModelOpt AutoCast's reference run is :func:`tensor_stats` over
    ``feeds`` (re-iterable: a list or an :class:`export.feeds.FeedSpool`). Raises if the
    conversion in the block did not run it."""
    import modelopt.onnx.autocast.convert as convert
    from modelopt.onnx.autocast.referencerunner import ReferenceRunner

    used: list[bool] = []

    class StreamedReferenceRunner(ReferenceRunner):
        def run(self, inputs=None):  # noqa: ARG002 (the feeds are bound, not a file)
            used.append(True)
            return tensor_stats(self.model, feeds)

    with _PATCH_LOCK:
        if getattr(convert, "ReferenceRunner", None) is not ReferenceRunner:
            raise RuntimeError(
                "this ModelOpt version's AutoCast does not run modelopt.onnx.autocast.convert.ReferenceRunner; "
                "the streamed reference run (export/autocast_reference.py) must be updated for it"
            )
        convert.ReferenceRunner = StreamedReferenceRunner
        try:
            yield
        finally:
            convert.ReferenceRunner = ReferenceRunner
    if not used:
        raise RuntimeError("ModelOpt AutoCast did not run its reference run; the fp16 graph would be unchecked")
