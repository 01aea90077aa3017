"""TensorRT backend: profile shapes on the CPU; engines only where TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from runtime.backends.trt_backend import TrtBackend, TrtProfile
from runtime.errors import BackendUnavailable


def test_profile_shapes_cover_every_input():
    profile = TrtProfile(min_hw=(64, 64), opt_hw=(480, 864), max_hw=(1088, 1920), max_batch=2, max_objects=8)
    key = profile.shapes("key_encoder", (1024, 512, 256))
    assert key == {"image": ((1, 3, 64, 64), (1, 3, 480, 864), (2, 3, 1088, 1920))}
    mask = profile.shapes("mask_autoencoder", (1024, 512, 256))
    assert mask["f8"] == ((1, 512, 8, 8), (1, 512, 60, 108), (2, 512, 136, 240))
    assert mask["coarse"] == ((1, 1, 4, 4), (1, 2, 30, 54), (2, 8, 68, 120))
    with pytest.raises(ValueError, match="multiples of 16"):
        TrtProfile(opt_hw=(480, 850))


def test_cpu_device_is_refused_with_a_clear_message(fp32_export):
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        TrtBackend.from_export_dir(fp32_export.out_dir, device="cpu")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed here")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_trt_engines_match_torch(fp32_export, reference_model, tmp_path):  # pragma: no cover - GPU only
    backend = TrtBackend.from_export_dir(fp32_export.out_dir, device="cuda", cache_dir=tmp_path,
                                         profile=TrtProfile(opt_hw=(96, 128), max_hw=(256, 256)))
    model = reference_model.to("cuda")
    image = torch.randn(1, 3, 96, 128, device="cuda")
    with torch.inference_mode():
        feats = backend.encode_key(image)
        ref = model.encode_key(image)
        assert float((feats.f16 - ref[0]).norm() / ref[0].norm()) < 1e-3
        coarse = torch.rand(1, 2, 6, 8, device="cuda")
        prob = backend.segment(image, feats, coarse)
        want = model.segment(image, *ref, coarse)
        assert float((prob - want).norm() / want.norm()) < 1e-3
    model.to("cpu")
