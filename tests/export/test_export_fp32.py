"""fp32 export of the published architecture (weights rule): graphs, manifest, parity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from export.clips import folder_clip
from export.parity import compare_labels, run_pipeline
from runtime.backends.ort_backend import OrtBackend
from runtime.backends.torch_backend import TorchBackend
from runtime.config import SessionConfig
from runtime.export_manifest import CONTRACT_VERSION, load_manifest, sha256_file

from .conftest import WORK_SIZE



def test_graphs_have_named_dynamic_axes_and_pass_the_checker(fp32_export):
    out = fp32_export.out_dir
    key = onnx.load(str(out / "key_encoder.onnx"))
    mask = onnx.load(str(out / "mask_autoencoder.onnx"))
    for model in (key, mask):
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(key.graph.input[0]) == ["batch", 3, "16*h16", "16*w16"]
    assert [dims(o) for o in key.graph.output] == [
        ["batch", 1024, "h16", "w16"], ["batch", 512, "2*h16", "2*w16"], ["batch", 256, "4*h16", "4*w16"],
    ]
    assert [i.name for i in mask.graph.input] == ["image", "f16", "f8", "f4", "coarse"]
    assert dims(mask.graph.input[4]) == ["batch", "objects", "h16", "w16"]
    assert dims(mask.graph.output[0]) == ["batch", "objects + 1", "16*h16", "16*w16"]


def test_manifest_records_contract_hashes_and_parity(fp32_export, published_checkpoint):
    out = fp32_export.out_dir
    data = json.loads((out / "manifest.json").read_text())
    assert data["contract_version"] == CONTRACT_VERSION
    assert data["precision"] == "fp32" and data["opset"] >= 17
    assert data["source_checkpoint"]["sha256"] == sha256_file(published_checkpoint)
    for name, graph in data["graphs"].items():
        assert graph["sha256"] == sha256_file(out / graph["file"])
        for tensor in graph["inputs"] + graph["outputs"]:
            assert tensor["dtype"] == "float32"
            assert "batch" in tensor["dynamic_axes"].values()
    assert {"torch", "onnx", "onnxruntime-gpu"} <= set(data["tools"]) or "onnxruntime" in data["tools"]
    verification = data["verification"]
    assert verification["verified"] is True
    parity = verification["fp32_graph_parity"]
    # Checked at a shape other than the traced one (batch 2, 2 objects, 64x96).
    assert (parity["shape"]["batch"], parity["shape"]["height"], parity["shape"]["width"]) != (2, 64, 96)
    assert all(err < 1e-4 for err in parity["rel_error"].values()), parity
    assert verification["tensorrt_operator_check"]["problems"] == []
    print("fp32 graph parity:", parity["rel_error"], "pipeline:", verification["pipeline"])


@torch.inference_mode()
def test_ort_backend_matches_torch_at_new_sizes_batches_and_objects(fp32_export, reference_model):
    backend = OrtBackend.from_export_dir(fp32_export.out_dir, device="cpu")
    assert backend.name == "onnxruntime" and backend.precision == "fp32"
    assert backend.providers["key_encoder"] == ["CPUExecutionProvider"]
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(2, 3, 96, 144, generator=gen)
    feats = backend.encode_key(image)
    ref = reference_model.encode_key(image)
    for got, want in zip((feats.f16, feats.f8, feats.f4), ref):
        assert got.shape == want.shape and got.dtype == torch.float32
        assert float((got - want).norm() / want.norm()) < 1e-4
    for objects in (1, 4):
        coarse = torch.rand(2, objects, 6, 9, generator=gen)
        prob = backend.segment(image, feats, coarse)
        want = reference_model.segment(image, *ref, coarse)
        assert prob.shape == (2, objects + 1, 96, 144)
        assert float((prob - want).norm() / want.norm()) < 1e-4


def test_fp32_onnxruntime_masks_equal_torch_masks_on_a_real_clip(fp32_export, reference_model, clip_dirs):
    # Another sequence than the one the export gate used (DAVIS, else a synthetic clip).
    clip = folder_clip(clip_dirs.other_frames, clip_dirs.other_masks, max_frames=6)
    config = SessionConfig(size=WORK_SIZE)
    masks_torch = run_pipeline(TorchBackend(reference_model, "cpu", "fp32"), clip, config)
    masks_ort = run_pipeline(OrtBackend.from_export_dir(fp32_export.out_dir), clip, config)
    assert clip.masks is not None and clip.first_mask().any()
    mean_iou, agreement = compare_labels(masks_torch, masks_ort, [int(v) for v in np.unique(clip.first_mask()) if v])
    print(f"fp32 onnxruntime vs torch over {len(clip.frames)} frames of {clip_dirs.source}: pixel agreement "
          f"{agreement:.5f}, mean IoU {mean_iou:.5f}")
    assert agreement >= 0.995


def test_manifest_loads_and_matches_graph_io(fp32_export):
    manifest = load_manifest(fp32_export.out_dir)
    assert manifest.verified and manifest.top_k == 30
    key = manifest.graphs["key_encoder"]
    assert [t.name for t in key.outputs] == ["f16", "f8", "f4"]
    assert key.output("f16").dynamic_axes == {0: "batch", 2: "h16", 3: "w16"}
    assert manifest.graphs["mask_autoencoder"].size_bytes == (fp32_export.out_dir / "mask_autoencoder.onnx").stat().st_size
    if not np.isfinite(manifest.verification["pipeline"]["mean_iou"]):
        pytest.fail("pipeline agreement was not recorded")


def test_cpu_sessions_do_not_spin_unless_asked(fp32_export):
    key = "session.intra_op.allow_spinning"
    backend = OrtBackend.from_export_dir(fp32_export.out_dir, device="cpu")
    assert backend.allow_spinning is False
    for session in backend._sessions.values():
        assert session.get_session_options().get_session_config_entry(key) == "0"
    from runtime.bench.suite import backend_settings

    settings = backend_settings(backend)
    assert settings["allow_spinning"] is False and settings["disabled_optimizers"] == []
    assert settings["providers"]["key_encoder"] == ["CPUExecutionProvider"] and settings["intra_op_threads"] >= 1
    spinning = OrtBackend.from_export_dir(fp32_export.out_dir, device="cpu", allow_spinning=True)
    for session in spinning._sessions.values():
        assert session.get_session_options().get_session_config_entry(key) == "1"
