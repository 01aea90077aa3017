"""The TensorRT operator check runs without TensorRT and catches unsupported graphs."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from export.trt_compat import SUPPORTED_OPS, check_tensorrt_compatibility


def _graph(node: onnx.NodeProto, opset: int = 19, extra_inits=()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([node], "g", [x], [y], initializer=list(extra_inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_an_unsupported_operator_is_reported():
    model = _graph(helper.make_node("Unique", ["x"], ["y"], name="uniq"))
    onnx.checker.check_model(model)
    problems = check_tensorrt_compatibility(model)
    assert len(problems) == 1 and "Unique is not supported" in problems[0] and "uniq" in problems[0]
    assert "Unique" not in SUPPORTED_OPS and "Conv" in SUPPORTED_OPS


def test_restrictions_and_custom_domains_are_reported(tmp_path):
    roi = helper.make_tensor("roi", TensorProto.FLOAT, [0], [])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [1], [2.0])
    cubic = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], name="up", mode="cubic")
    problems = check_tensorrt_compatibility(_graph(cubic, extra_inits=[roi, scales]))
    assert any("mode='cubic'" in p for p in problems)
    custom = helper.make_node("MyOp", ["x"], ["y"], name="mine", domain="com.example")
    assert any("plugin" in p for p in check_tensorrt_compatibility(_graph(custom)))
    old = _graph(helper.make_node("Relu", ["x"], ["y"], name="r"), opset=8)
    assert any("opset 8" in p for p in check_tensorrt_compatibility(old))
    path = tmp_path / "ok.onnx"
    onnx.save(_graph(helper.make_node("Relu", ["x"], ["y"], name="r")), str(path))
    assert check_tensorrt_compatibility(path) == []


def test_exported_graphs_pass(fp32_export, int8_export):
    for export in (fp32_export, int8_export):
        for name in ("key_encoder.onnx", "mask_autoencoder.onnx"):
            assert check_tensorrt_compatibility(export.out_dir / name) == []
