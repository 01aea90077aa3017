"""The runtime refuses tampered exports and unknown contract versions, with clear messages."""

from __future__ import annotations

import json
import shutil

import pytest

from runtime.backends.factory import create_backend
from runtime.backends.ort_backend import OrtBackend
from runtime.export_manifest import ExportManifestError, load_manifest


@pytest.fixture()
def export_copy(fp32_export, tmp_path):
    dst = tmp_path / "export"
    shutil.copytree(fp32_export.out_dir, dst)
    return dst


def test_a_tampered_graph_is_refused(export_copy):
    path = export_copy / "mask_autoencoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights: same size, new hash
    path.write_bytes(bytes(data))
    with pytest.raises(ExportManifestError, match="does not match the manifest.*sha256"):
        load_manifest(export_copy)
    with pytest.raises(ExportManifestError, match="mask_autoencoder.onnx does not match"):
        OrtBackend.from_export_dir(export_copy)
    with pytest.raises(ExportManifestError):
        create_backend("onnxruntime", export_dir=export_copy)


def test_a_missing_graph_is_refused(export_copy):
    (export_copy / "key_encoder.onnx").unlink()
    with pytest.raises(ExportManifestError, match="key_encoder.onnx is missing"):
        load_manifest(export_copy)


def test_an_unknown_contract_version_is_refused(export_copy):
    path = export_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["contract_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ExportManifestError, match="contract version 99 is not supported"):
        OrtBackend.from_export_dir(export_copy)


def test_a_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(ExportManifestError, match="no manifest.json"):
        load_manifest(tmp_path)


def test_disabled_optimizers_round_trip_and_bad_values_are_refused(export_copy):
    path = export_copy / "manifest.json"
    data = json.loads(path.read_text())
    assert data["onnxruntime_disabled_optimizers"] == []  # fp32: nothing switched off
    data["onnxruntime_disabled_optimizers"] = ["CommonSubexpressionElimination"]
    path.write_text(json.dumps(data))
    manifest = load_manifest(export_copy)
    assert manifest.onnxruntime_disabled_optimizers == ("CommonSubexpressionElimination",)
    assert manifest.to_dict()["onnxruntime_disabled_optimizers"] == ["CommonSubexpressionElimination"]
    OrtBackend.from_export_dir(export_copy)  # a session is made with it switched off
    data["onnxruntime_disabled_optimizers"] = "CommonSubexpressionElimination"
    path.write_text(json.dumps(data))
    with pytest.raises(ExportManifestError, match="onnxruntime_disabled_optimizers must be a list"):
        load_manifest(export_copy)
