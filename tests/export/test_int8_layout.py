"""export.int8_layout: shifting weight zero points keeps the dequantized weights (within
half a step) and the graph's output, and the faster layout is the one kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export import int8_layout


def _qdq_conv_model(seed: int = 0) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(DQ(int8 per-channel weights, zero point 0)) -> y, 3x3, 8 -> 16."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    scale = (np.abs(w).reshape(16, -1).max(axis=1) / 127).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scale, "w_s"),
        numpy_helper.from_array(np.zeros(16, np.int8), "w_z"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_s"), numpy_helper.from_array(np.array(0, np.int8), "x_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


def _weights(model: onnx.ModelProto) -> np.ndarray:
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero = arrays["w_z"].astype(np.float32)[:, None, None, None]
    return (arrays["w_q"].astype(np.float32) - zero) * arrays["w_s"][:, None, None, None]


def test_shifted_weights_dequantize_to_the_same_values_within_half_a_step():
    model = _qdq_conv_model()
    before = _weights(model)
    assert int8_layout.shift_weight_zero_points(model) == 1
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert arrays["w_z"].dtype == np.int8 and np.all(arrays["w_z"] == 1)
    assert arrays["w_q"].min() >= -125 and arrays["w_q"].max() <= 127
    step = arrays["w_s"][:, None, None, None]
    assert np.all(np.abs(_weights(model) - before) <= step / 2 + 1e-7)
    assert int8_layout.shift_weight_zero_points(model) == 0  # already shifted: left alone


def test_the_shifted_graph_computes_the_same_convolution():
    import onnxruntime as ort

    x = {"x": np.random.default_rng(1).standard_normal((1, 8, 12, 16)).astype(np.float32)}
    original = _qdq_conv_model()
    shifted = _qdq_conv_model()
    int8_layout.shift_weight_zero_points(shifted)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]  # noqa: E731
    a, b = run(original), run(shifted)
    assert np.abs(a - b).max() <= 0.02 * np.abs(a).max()


@pytest.mark.parametrize("shifted_faster", [True, False])
def test_the_faster_layout_is_kept(tmp_path, monkeypatch, shifted_faster):
    path = tmp_path / "g.onnx"
    onnx.save_model(_qdq_conv_model(), str(path))

    def fake_time(graph, feed, disabled, threads=None, runs=3):
        is_shifted = graph != path
        return 10.0 if is_shifted == shifted_faster else 20.0

    monkeypatch.setattr(int8_layout, "time_graph", fake_time)
    details = int8_layout.choose_cpu_layout(path, {"x": np.zeros((1, 8, 12, 16), np.float32)}, ())
    zero_points = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}["w_z"]
    assert details["shifted_convolutions"] == 1
    assert details["layout"] == (int8_layout.SHIFTED if shifted_faster else int8_layout.SYMMETRIC)
    assert np.all(zero_points == (1 if shifted_faster else 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]  # the candidate is gone
