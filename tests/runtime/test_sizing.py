"""--size auto: the checkpoint's processing size, an export's, else the published 480."""

from __future__ import annotations

import json

import pytest
import torch

from runtime.sizing import AUTO, parse_size, resolve_size
from stmae import STMAE, load_checkpoint, preset, save_checkpoint
from stmae.checkpoint import CheckpointError, checkpoint_processing_size


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return STMAE(preset("small"))


def test_checkpoints_record_and_return_their_processing_size(small_model, tmp_path):
    with_size, without = tmp_path / "a.pth", tmp_path / "b.pth"
    save_checkpoint(with_size, small_model, processing_size=240)
    save_checkpoint(without, small_model)
    assert load_checkpoint(with_size).processing_size == 240 == checkpoint_processing_size(with_size)
    assert load_checkpoint(with_size).recommended_size == 240
    assert "processing_size" not in load_checkpoint(with_size).extra
    assert load_checkpoint(without).processing_size is None and load_checkpoint(without).recommended_size == 480
    assert resolve_size(AUTO, checkpoint=with_size).size == 240
    assert resolve_size(AUTO, checkpoint=with_size).text() == "size 240 (auto: the checkpoint's own)"
    assert resolve_size(AUTO, checkpoint=without).size == 480
    assert resolve_size(320, checkpoint=with_size).text() == "size 320 (--size)"
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "c.pth", small_model, processing_size=8)
    bad = {"network": small_model.state_dict(), "config": small_model.config.to_dict(), "processing_size": "240"}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="processing_size"):
        load_checkpoint(tmp_path / "bad.pth")


def test_exports_record_the_size_in_their_manifest(tmp_path):
    from runtime.export_manifest import parse_manifest

    folder = tmp_path / "export"
    folder.mkdir()
    io = {"key_encoder": (["image"], ["f16", "f8", "f4"]), "mask_autoencoder": (["image", "f16", "f8", "f4", "coarse"], ["prob"])}
    graphs = {name: {"file": f"{name}.onnx", "sha256": "0" * 64, "size_bytes": 1,
                     "inputs": [{"name": n, "dtype": "float32", "shape": [1]} for n in ins],
                     "outputs": [{"name": n, "dtype": "float32", "shape": [1]} for n in outs]}
              for name, (ins, outs) in io.items()}
    data = {"format": "stmae-onnx-export", "contract_version": 1, "precision": "int8", "opset": 19,
            "model_config": {}, "graphs": graphs, "target": "cpu", "processing_size": 240}
    (folder / "manifest.json").write_text(json.dumps(data))
    assert resolve_size(AUTO, export_dir=folder).text() == "size 240 (auto: the export's manifest)"
    assert parse_manifest(data).target == "cpu"
    del data["processing_size"]
    (folder / "manifest.json").write_text(json.dumps(data))
    assert resolve_size(AUTO, export_dir=folder).size == 480
    from runtime.export_manifest import ExportManifestError

    with pytest.raises(ExportManifestError, match="target"):
        parse_manifest({**data, "target": "gpu"})


def test_parse_size():
    assert parse_size("auto") == AUTO and parse_size("-1") == -1 and parse_size("240") == 240
    from runtime.errors import InputError

    for bad in ("8", "x", "0"):  # parsed as given, refused with one line when resolved
        with pytest.raises(InputError, match=f"--size {bad}: expected 'auto', -1"):
            resolve_size(parse_size(bad))


def test_training_records_the_resolution_it_trains_at():
    from train.config import DataConfig, TrainConfig, ValidationConfig

    davis240 = TrainConfig(data=DataConfig(davis_roots=("d",), davis_resolution="240p"), model="small")
    assert davis240.processing_size == 240
    assert TrainConfig(data=DataConfig(davis_roots=("d",), youtube_roots=("y",)), model="small").processing_size == 480
    validated = TrainConfig(data=DataConfig(davis_roots=("d",), davis_resolution="240p"), model="small",
                            validation=ValidationConfig(root="r", sequences=("a",), every_steps=5, size=320))
    assert validated.processing_size == 320
