"""fp16 (ModelOpt AutoCast) and int8 (Q/DQ) exports run on ONNX Runtime's CPU provider;
their agreement with PyTorch on real DAVIS frames is printed and recorded."""

from __future__ import annotations

import json

import onnx
import torch

from runtime.backends.ort_backend import OrtBackend
from runtime.export_manifest import load_manifest


def _report(export) -> dict:
    data = json.loads((export.out_dir / "manifest.json").read_text())
    v = data["verification"]
    sizes = {g["file"]: round(g["size_bytes"] / 1e6, 1) for g in data["graphs"].values()}
    print(f"{data['precision']}: pipeline {v['pipeline']}, graph rel error {v['graph_rel_error']}, "
          f"top-k {v['topk_sensitivity']}, sizes MB {sizes}, seconds {export.seconds}")
    return data


def _runs_on_cpu(export) -> None:
    backend = OrtBackend.from_export_dir(export.out_dir, device="cpu")
    image = torch.randn(1, 3, 64, 80)
    feats = backend.encode_key(image)
    prob = backend.segment(image, feats, torch.rand(1, 2, 4, 5))
    assert prob.shape == (1, 3, 64, 80) and torch.isfinite(prob).all()
    assert torch.allclose(prob.sum(dim=1), torch.ones(1, 64, 80), atol=1e-4)


def test_fp16_export_is_mixed_precision_and_agrees(fp16_export):
    data = _report(fp16_export)
    assert data["precision"] == "fp16"
    key = onnx.load(str(fp16_export.out_dir / "key_encoder.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in key.graph.initializer)
    mask = onnx.load(str(fp16_export.out_dir / "mask_autoencoder.onnx"))
    softmax = [n for n in mask.graph.node if n.op_type == "Softmax"]
    assert softmax, "the aggregation softmax is in the graph"
    details = data["precision_details"]
    assert details["mask_autoencoder"]["kept_float32_nodes"] > 0
    v = data["verification"]
    assert v["verified"] and v["pipeline"]["mean_iou"] >= v["thresholds"]["fp16_min_iou"]
    assert v["pipeline"]["jf_reference"] is not None and v["pipeline"]["jf_candidate"] is not None
    assert 0 <= v["topk_sensitivity"]["topk_sets_changed"] <= 1
    _runs_on_cpu(fp16_export)


def test_int8_export_has_symmetric_qdq_and_agrees(int8_export):
    data = _report(int8_export)
    assert data["precision"] == "int8"
    mask = onnx.load(str(int8_export.out_dir / "mask_autoencoder.onnx"))
    qdq = [n for n in mask.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "int8 is decided in the graph with Q/DQ nodes"
    v = data["verification"]
    assert v["pipeline"]["mean_iou"] >= v["thresholds"]["int8_min_iou"]
    assert data["precision_details"]["calibration"]["mask_autoencoder_feeds"] >= 1
    manifest = load_manifest(int8_export.out_dir)
    assert manifest.precision == "int8"
    _runs_on_cpu(int8_export)


def test_int8_onnxruntime_quantizer_runs_every_convolution_in_int8(int8_ort_quantizer_export, tmp_path):
    """The CPU layout: with the session settings the manifest asks for, ONNX Runtime fuses
    every convolution of the mask autoencoder into QLinearConv (none left float32; with
    common subexpression elimination on, 11 of 35 stay float32)."""
    import onnxruntime as ort

    out = int8_ort_quantizer_export
    manifest = load_manifest(out)
    assert "CommonSubexpressionElimination" in manifest.onnxruntime_disabled_optimizers
    source = onnx.load(str(out / "mask_autoencoder.onnx"))
    convs = sum(1 for n in source.graph.node if n.op_type == "Conv")
    assert convs > 10
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(out / "mask_autoencoder.onnx"), options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=list(manifest.onnxruntime_disabled_optimizers))
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    ops = [n.op_type for n in optimized.graph.node]
    assert ops.count("QLinearConv") == convs, {op: ops.count(op) for op in set(ops)}
    assert "Conv" not in ops and "FusedConv" not in ops
    v = manifest.verification
    assert v["verified"] and v["pipeline"]["mean_iou"] >= v["thresholds"]["int8_min_iou"]
    backend = OrtBackend.from_export_dir(out, device="cpu")
    image = torch.randn(1, 3, 64, 80)
    prob = backend.segment(image, backend.encode_key(image), torch.rand(1, 2, 4, 5))
    assert prob.shape == (1, 3, 64, 80) and torch.isfinite(prob).all()
