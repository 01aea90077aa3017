"""The lite preset (EfficientNet-Lite0 keys) exports like the others: fp32 ONNX graphs that
pass the parity gate, with the backbone and the recorded memory interval in the manifest."""

from __future__ import annotations

import pytest
import torch

from runtime.export_manifest import load_manifest
from stmae import STMAE, preset, save_checkpoint

from .conftest import _export


@pytest.fixture(scope="module")
def lite_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lite") / "lite.pth"
    save_checkpoint(path, STMAE(preset("lite")), mem_every=3)
    return path


def test_lite_exports_and_passes_the_gate(tmp_path_factory, lite_checkpoint, clip_dirs):
    result = _export(tmp_path_factory, lite_checkpoint, clip_dirs, "fp32")
    manifest = load_manifest(result.out_dir)
    assert manifest.verified, manifest.verification
    assert manifest.model_config["key_backbone"] == "efficientnet_lite0" and manifest.mem_every == 3
    key_outputs = {t.name: t.shape for t in manifest.graphs["key_encoder"].outputs}
    assert [key_outputs[n][1] for n in ("f16", "f8", "f4")] == [112, 40, 24]
