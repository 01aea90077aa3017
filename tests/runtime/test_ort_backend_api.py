"""The ONNX Runtime backend's GPU settings and run sequence, against a recording fake of
the onnxruntime API (onnxruntime-gpu and a GPU are not here).

Checked: per-graph TensorRT provider profiles (trt_profile_min/opt/max_shapes) and engine
cache, device_id of ``device``, the backend's non-default stream as user_compute_stream,
use_tf32 off, runs without host synchronisation (disable_synchronize_execution_providers,
no synchronize_inputs/outputs) with their tensors held until done, and the synchronising
fallback when a user's provider options name another stream.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import runtime.backends.ort_backend as ort_backend
from runtime.backends.base import KeyFeatures
from runtime.backends.ort_backend import NO_SYNC, OrtBackend
from runtime.backends.trt_profile import TrtProfile
from runtime.export_manifest import GRAPH_FILES, GRAPH_INPUTS, GRAPH_OUTPUTS

from .fake_export import fake_export_manifest

STREAM = 0x5EED00
GPU = torch.device("cuda", 1)
ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


class FakeBinding:
    def __init__(self):
        self.calls = []

    def bind_input(self, name, device_type, device_id, element_type, shape, ptr):
        self.calls.append(("bind_input", name, device_type, device_id, tuple(shape)))

    def bind_output(self, name, device_type, device_id, element_type, shape, ptr):
        self.calls.append(("bind_output", name, device_type, device_id, tuple(shape)))

    def synchronize_inputs(self):
        self.calls.append(("synchronize_inputs",))

    def synchronize_outputs(self):
        self.calls.append(("synchronize_outputs",))


class FakeSession:
    def __init__(self, graph, providers):
        self.graph, self.chosen = graph, providers
        self.bindings, self.runs = [], []

    def get_inputs(self):
        return [SimpleNamespace(name=n, type="tensor(float)") for n in GRAPH_INPUTS[self.graph]]

    def get_outputs(self):
        return [SimpleNamespace(name=n, type="tensor(float)") for n in GRAPH_OUTPUTS[self.graph]]

    def get_providers(self):
        return [n for n, _ in self.chosen]

    def io_binding(self):
        self.bindings.append(FakeBinding())
        return self.bindings[-1]

    def run_with_iobinding(self, binding, run_options=None):
        self.runs.append((binding, run_options))


def fake_ort(available=ALL, trt_fails=False):
    ort = SimpleNamespace(sessions=[])
    ort.get_available_providers = lambda: list(available)
    ort.GraphOptimizationLevel = SimpleNamespace(ORT_ENABLE_ALL=99)

    class SessionOptions:
        def __init__(self):
            self.entries = {}

        def add_session_config_entry(self, key, value):
            self.entries[key] = value

    class RunOptions:
        def __init__(self):
            self.entries = {}

        def add_run_config_entry(self, key, value):
            self.entries[key] = value

    def InferenceSession(path, sess_options=None, providers=None, disabled_optimizers=None):
        if trt_fails and any(n == "TensorrtExecutionProvider" for n, _ in providers):
            raise RuntimeError("libnvinfer.so.10: cannot open shared object file")
        graph = next(g for g, f in GRAPH_FILES.items() if str(path).endswith(f))
        ort.sessions.append(FakeSession(graph, providers))
        return ort.sessions[-1]

    ort.SessionOptions, ort.RunOptions, ort.InferenceSession = SessionOptions, RunOptions, InferenceSession
    return ort


class FakeRuns:
    def __init__(self):
        self.handle = STREAM
        self.events, self.kept = [], []

    def begin(self):
        self.events.append("begin")
        return SimpleNamespace(cuda_stream=STREAM)

    def end(self, keep):
        self.events.append("end")
        self.kept.append(tuple(keep))


class CpuTensorsOrt(OrtBackend):
    """The backend with device cuda:1, holding its tensors on the CPU (no GPU here): only
    where tensors live is changed, not what the backend asks ONNX Runtime to do."""

    def _prepare(self, tensor, what):
        return tensor.detach().float().contiguous()

    def _empty(self, shape):
        return torch.empty(shape, dtype=torch.float32)


def make(tmp_path, monkeypatch, ort=None, **kwargs):
    ort = ort or fake_ort()
    monkeypatch.setattr(ort_backend, "_import_ort", lambda: ort)
    monkeypatch.setenv("STMAE_TRT_CACHE", str(tmp_path / "trt-cache"))
    runs = FakeRuns()
    backend = CpuTensorsOrt(tmp_path, fake_export_manifest(tmp_path), GPU, runs=runs, **kwargs)
    return backend, ort, runs


def options_of(session, provider):
    return dict(session.chosen)[provider]


def test_gpu_providers_get_device_stream_profiles_and_cache(tmp_path, monkeypatch):
    backend, ort, _ = make(tmp_path, monkeypatch)
    key, mask = ort.sessions
    for session in (key, mask):
        trt = options_of(session, "TensorrtExecutionProvider")
        cuda = options_of(session, "CUDAExecutionProvider")
        for opts in (trt, cuda):
            assert opts["device_id"] == 1
            assert opts["user_compute_stream"] == str(STREAM) != "0"
        assert cuda["use_tf32"] == "0"
        assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == str(tmp_path / "trt-cache")
        for bound in ("min", "opt", "max"):
            assert f"trt_profile_{bound}_shapes" in trt
    key_trt = options_of(key, "TensorrtExecutionProvider")
    mask_trt = options_of(mask, "TensorrtExecutionProvider")
    assert key_trt["trt_profile_max_shapes"] == "image:4x3x1088x1920"
    assert mask_trt["trt_profile_max_shapes"].endswith("coarse:4x16x68x120")
    assert options_of(mask, "CPUExecutionProvider") == {}


def test_profile_is_the_one_given(tmp_path, monkeypatch):
    _, ort, _ = make(tmp_path, monkeypatch, trt_profile=TrtProfile.for_frames(96, 128, objects=2), tf32=True)
    key, mask = ort.sessions
    assert options_of(key, "TensorrtExecutionProvider")["trt_profile_min_shapes"] == "image:1x3x96x128"
    assert options_of(mask, "TensorrtExecutionProvider")["trt_profile_opt_shapes"].endswith("coarse:1x2x6x8")
    assert options_of(key, "CUDAExecutionProvider")["use_tf32"] == "1"


def test_runs_are_ordered_by_events_without_host_syncs(tmp_path, monkeypatch):
    backend, ort, runs = make(tmp_path, monkeypatch)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: pytest.fail("host sync on the CUDA stream"))
    image = torch.rand(1, 3, 32, 48)
    feats = backend.encode_key(image)
    prob = backend.segment(image, feats, torch.rand(1, 2, 2, 3))
    assert prob.shape == (1, 3, 32, 48)
    assert runs.events == ["begin", "end", "begin", "end"]
    for session in ort.sessions:
        (binding, run_options), = session.runs
        assert run_options is not None and run_options.entries[NO_SYNC] == "1"
        assert not any(c[0].startswith("synchronize") for c in binding.calls)
        assert all(c[2:4] == ("cuda", 1) for c in binding.calls)
    kept_mask = runs.kept[1]
    assert any(t is prob for t in kept_mask)
    assert any(t.data_ptr() == feats.f16.data_ptr() for t in kept_mask)  # an input of the run


def test_user_options_on_another_stream_fall_back_to_synchronised_runs(tmp_path, monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: SimpleNamespace(synchronize=lambda: syncs.append(1)))
    providers = [("CUDAExecutionProvider", {"user_compute_stream": "1234"}), "CPUExecutionProvider"]
    backend, ort, runs = make(tmp_path, monkeypatch, providers=providers)
    assert options_of(ort.sessions[0], "CUDAExecutionProvider")["device_id"] == 1  # ours merged under theirs
    backend.encode_key(torch.rand(1, 3, 32, 48))
    (binding, run_options), = ort.sessions[0].runs
    assert run_options is None and runs.events == [] and syncs == [1]
    assert [c[0] for c in binding.calls][-2:] == ["synchronize_inputs", "synchronize_outputs"]


def test_tensorrt_provider_failing_to_load_falls_back_keeping_the_stream(tmp_path, monkeypatch):
    backend, ort, runs = make(tmp_path, monkeypatch, ort=fake_ort(trt_fails=True))
    assert backend.providers["key_encoder"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    backend.encode_key(torch.rand(1, 3, 32, 48))
    assert runs.events == ["begin", "end"]


def test_cpu_device_is_unchanged(tmp_path, monkeypatch):
    ort = fake_ort(available=["CPUExecutionProvider"])
    monkeypatch.setattr(ort_backend, "_import_ort", lambda: ort)
    backend = OrtBackend(tmp_path, fake_export_manifest(tmp_path), torch.device("cpu"))
    assert ort.sessions[0].chosen == [("CPUExecutionProvider", {})]
    feats = backend.encode_key(torch.rand(1, 3, 32, 48))
    assert isinstance(feats, KeyFeatures)
    (binding, run_options), = ort.sessions[0].runs
    assert run_options is None and not any(c[0].startswith("synchronize") for c in binding.calls)
    assert np.isfinite(feats.f16.shape[1])
