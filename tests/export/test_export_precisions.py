"""fp16 (ModelOpt AutoCast) and int8 (Q/DQ) exports run on ONNX Runtime's CPU provider;
their accuracy drop and agreement with PyTorch on a clip with ground truth (real DAVIS
frames, else a synthetic clip) are printed and recorded. Tests here would catch the gate
or the conversion going blind: an fp16 mask autoencoder left float32, a runtime that drops
the manifest's ONNX Runtime settings."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from export import int8_layout
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


def _fp16_conv_share(model: onnx.ModelProto) -> tuple[int, int]:
    """(convolutions whose weight is a float16 initializer, all convolutions)."""
    fp16 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return sum(1 for n in convs if n.input[1] in fp16), len(convs)


def _gate_passed_on_accuracy(data: dict) -> dict:
    """The fp16/int8 gate decided on the J&F drop (the clip has ground truth) and passed."""
    v = data["verification"]
    p = data["precision"]
    pipeline = v["pipeline"]
    assert v["verified"] and v["gate"]["passed"], v.get("gate")
    assert pipeline["jf_reference"] is not None and pipeline["jf_candidate"] is not None
    assert pipeline["jf_drop"] == pytest.approx(pipeline["jf_reference"] - pipeline["jf_candidate"])
    assert pipeline["jf_drop"] <= v["thresholds"][f"{p}_max_jf_drop"]
    assert "J&F" in v["gate"]["measured"] and "mean IoU" in v["gate"]["measured"]
    return pipeline


def test_fp16_export_is_mixed_precision_and_agrees(fp16_export):
    data = _report(fp16_export)
    assert data["precision"] == "fp16"
    key = onnx.load(str(fp16_export.out_dir / "key_encoder.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in key.graph.initializer)
    mask = onnx.load(str(fp16_export.out_dir / "mask_autoencoder.onnx"))
    # Both graphs compute in fp16: most convolutions take float16 weights (an "fp16" mask
    # autoencoder left entirely float32 fails here).
    for graph in (key, mask):
        half, total = _fp16_conv_share(graph)
        assert total > 10 and half >= 0.8 * total, (half, total)
    # The aggregation's softmax is written out (stmae.aggregate.channel_softmax): ONNX
    # Runtime's CPU provider runs a Softmax over the channel axis ~5x slower.
    ops = {n.op_type for n in mask.graph.node}
    assert {"ReduceMax", "Exp", "ReduceSum", "Div"} <= ops and "Softmax" not in ops, ops
    details = data["precision_details"]
    assert details["mask_autoencoder"]["kept_float32_nodes"] > 0
    v = data["verification"]
    _gate_passed_on_accuracy(data)
    assert 0 <= v["topk_sensitivity"]["topk_sets_changed"] <= 1
    _runs_on_cpu(fp16_export)


def test_int8_export_has_symmetric_qdq_and_agrees(int8_export):
    data = _report(int8_export)
    assert data["precision"] == "int8"
    mask = onnx.load(str(int8_export.out_dir / "mask_autoencoder.onnx"))
    qdq = [n for n in mask.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "int8 is decided in the graph with Q/DQ nodes"
    _gate_passed_on_accuracy(data)
    assert data["precision_details"]["calibration"]["mask_autoencoder_feeds"] >= 1
    manifest = load_manifest(int8_export.out_dir)
    assert manifest.precision == "int8" and manifest.target == "tensorrt"
    assert "modelopt" in data["precision_details"]["mask_autoencoder"]["tool"]
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
    assert manifest.target == "cpu" and "onnxruntime" in manifest.precision_details["mask_autoencoder"]["tool"]
    for graph in ("key_encoder", "mask_autoencoder"):  # both weight layouts were timed, the faster kept
        layout = manifest.precision_details[graph]["convolution_layout"]
        assert layout["shifted_convolutions"] > 0 and set(layout["timed_ms"]) == {"symmetric", "zero_point_1"}
        timed = layout["timed_ms"]
        if timed["symmetric"] != timed["zero_point_1"]:  # a tie at the recorded precision says nothing
            chosen = min(timed, key=timed.get)
            assert layout["layout"] == (int8_layout.SHIFTED if chosen == "zero_point_1" else int8_layout.SYMMETRIC)
    _gate_passed_on_accuracy(manifest.to_dict())
    backend = OrtBackend.from_export_dir(out, device="cpu")
    image = torch.randn(1, 3, 64, 80)
    prob = backend.segment(image, backend.encode_key(image), torch.rand(1, 2, 4, 5))
    assert prob.shape == (1, 3, 64, 80) and torch.isfinite(prob).all()


def test_the_runtime_applies_the_manifests_onnxruntime_settings(int8_ort_quantizer_export, monkeypatch):
    """Every ONNX Runtime session the backend opens switches off what the manifest says
    (a runtime that dropped onnxruntime_disabled_optimizers would silently lose the int8
    speed-up), and no layout warning is printed for a CPU-layout export on the CPU."""
    import onnxruntime as ort

    seen: list[dict] = []
    real = ort.InferenceSession

    def recording(path, sess_options=None, providers=None, provider_options=None, **kwargs):
        seen.append({"path": str(path), "disabled": list(kwargs.get("disabled_optimizers") or []),
                     "options": sess_options})
        return real(path, sess_options=sess_options, providers=providers, provider_options=provider_options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    backend = OrtBackend.from_export_dir(int8_ort_quantizer_export, device="cpu")
    wanted = set(load_manifest(int8_ort_quantizer_export).onnxruntime_disabled_optimizers)
    assert wanted == {"CommonSubexpressionElimination"}
    assert {p["path"].rsplit("/", 1)[-1] for p in seen} == {"key_encoder.onnx", "mask_autoencoder.onnx"}
    for p in seen:
        assert wanted <= set(p["disabled"]), p
        assert p["options"].graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert backend.layout_warning is None


def test_int8_exports_read_memory_with_bf16_products_and_fp32_exports_do_not(int8_ort_quantizer_export,
                                                                              fp32_export, monkeypatch):
    """The CPU readout of an int8 export runs under stmae.readout.cpu_bf16_products; an
    fp32 export's readout stays float32 (the switch is asked for with enabled=False)."""
    import runtime.engine.device_step as device_step
    from runtime.config import SessionConfig
    from runtime.engine.session import VideoSession

    asked: list[bool] = []
    real = device_step.cpu_bf16_products

    def spy(enabled=True):
        asked.append(enabled)
        return real(enabled)

    monkeypatch.setattr(device_step, "cpu_bf16_products", spy)
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 80, 3), dtype=np.uint8)
    mask = np.zeros((64, 80), np.uint8)
    mask[20:40, 30:50] = 1
    for out, expected in ((int8_ort_quantizer_export, True), (fp32_export.out_dir, False)):
        asked.clear()
        backend = OrtBackend.from_export_dir(out, device="cpu")
        assert backend.readout_bf16_products is expected
        session = VideoSession(backend, SessionConfig(size=-1))
        for t, frame in enumerate(frames):
            session.step(frame, mask if t == 0 else None)
        assert asked and set(asked) == {expected}, asked


def test_a_tensorrt_layout_on_the_cpu_provider_warns_once(int8_export, capsys):
    backend = OrtBackend.from_export_dir(int8_export.out_dir, device="cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert backend.layout_warning and "--target cpu" in backend.layout_warning
    assert [line for line in err if "stmae: warning:" in line] == [f"stmae: warning: {backend.layout_warning}"]
