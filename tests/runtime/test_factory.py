import sys
import types

import pytest
import torch

from runtime.backends import TorchBackend, create_backend
from runtime.errors import BackendUnavailable
from stmae import CheckpointError


def test_torch_backend_from_checkpoint(small_checkpoint):
    backend = create_backend("torch", checkpoint=small_checkpoint, device="cpu")
    assert isinstance(backend, TorchBackend)
    assert backend.name == "torch" and backend.precision == "fp32" and backend.device == torch.device("cpu")
    feats = backend.encode_key(torch.zeros(1, 3, 32, 48))
    assert feats.f16.shape == (1, 256, 2, 3) and feats.f16.dtype == torch.float32
    prob = backend.segment(torch.zeros(1, 3, 32, 48), feats, torch.zeros(1, 2, 2, 3))
    assert prob.shape == (1, 3, 32, 48) and prob.dtype == torch.float32


def test_errors(tmp_path, small_checkpoint):
    with pytest.raises(BackendUnavailable, match="unknown backend 'jax'"):
        create_backend("jax")
    with pytest.raises(BackendUnavailable, match="needs a checkpoint"):
        create_backend("torch")
    with pytest.raises(CheckpointError, match="does not exist"):
        create_backend("torch", checkpoint=tmp_path / "nope.pth")
    with pytest.raises(BackendUnavailable, match="needs an export folder"):
        create_backend("onnxruntime")
    with pytest.raises(BackendUnavailable, match="no manifest.json"):
        create_backend("tensorrt", export_dir=tmp_path)
    with pytest.raises(BackendUnavailable, match="precision fp16 needs a CUDA device"):
        create_backend("torch", checkpoint=small_checkpoint, precision="fp16")
    with pytest.raises(BackendUnavailable, match="unknown device"):
        create_backend("torch", checkpoint=small_checkpoint, device="gpu7")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_missing_is_reported(small_checkpoint):
    with pytest.raises(BackendUnavailable, match="CUDA is not available"):
        create_backend("torch", checkpoint=small_checkpoint, device="cuda")


def test_export_backends_are_imported_lazily(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text("{}")
    calls = []

    class FakeOrt:
        @classmethod
        def from_export_dir(cls, export_dir, device="cpu"):
            calls.append((export_dir, device))
            return cls()

    fake = types.ModuleType("runtime.backends.ort_backend")
    fake.OrtBackend = FakeOrt
    monkeypatch.setitem(sys.modules, "runtime.backends.ort_backend", fake)
    assert isinstance(create_backend("onnxruntime", export_dir=tmp_path, device="cpu"), FakeOrt)
    assert calls == [(tmp_path, "cpu")]
    monkeypatch.setitem(sys.modules, "runtime.backends.trt_backend", None)
    with pytest.raises(BackendUnavailable, match="tensorrt backend is not part of this installation"):
        create_backend("tensorrt", export_dir=tmp_path)
