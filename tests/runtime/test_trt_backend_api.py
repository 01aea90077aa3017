"""The TensorRT backend's use of the TensorRT API, against a recording fake of it.

TensorRT and a GPU are not here, so these tests check the calls our code makes and what
it does with the answers: the user-managed allocation strategy and the memory it hands
over, a None context refused, return values of set_input_shape/set_tensor_address
checked, engine output dtypes honoured, the run enqueued on a non-default stream with its
tensors held until it ends, the device made current, TF32 cleared and recorded, the
engine cache keyed and vouched for by its manifest. The fake follows the TensorRT 10/11
Python API (names, arguments, return values) as documented; tensors live on the CPU.
"""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import pytest
import torch

import runtime.backends.trt_backend as trt_backend
from runtime.backends.trt_backend import TrtBackend, _Engine
from runtime.backends.trt_build import TrtBuildOptions, build_engine, engine_identity, load_or_build
from runtime.backends.trt_profile import TrtProfile
from runtime.errors import BackendUnavailable

from .fake_export import fake_export_manifest

STREAM = 0x7F00AB  # the fake non-default stream handle


class _Enum:
    def __init__(self, *names):
        for n in names:
            setattr(self, n, f"<{n}>")


class FakeContext:
    def __init__(self, engine, strategy):
        self.engine, self.strategy = engine, strategy
        self.calls: list[tuple] = []
        self.shapes: dict[str, tuple] = {}
        self.refuse_shape = self.refuse_address = False
        self.need = 1000

    def set_input_shape(self, name, shape):
        self.calls.append(("set_input_shape", name, tuple(shape)))
        self.shapes[name] = tuple(shape)
        return not self.refuse_shape

    def set_tensor_address(self, name, ptr):
        self.calls.append(("set_tensor_address", name, ptr))
        return not self.refuse_address

    def infer_shapes(self):
        return []

    def get_tensor_shape(self, name):
        b, _, h, w = self.shapes["x"]
        return (b, 2, h, w)

    def update_device_memory_size_for_shapes(self):
        self.calls.append(("update_device_memory_size_for_shapes",))
        return self.need

    def set_device_memory(self, ptr, size):
        self.calls.append(("set_device_memory", ptr, size))

    def execute_async_v3(self, stream_handle):
        self.calls.append(("execute_async_v3", stream_handle))
        return True


class FakeEngine:
    def __init__(self, trt, out_dtype, context_none=False):
        self.trt, self.out_dtype, self.context_none = trt, out_dtype, context_none
        self.num_io_tensors = 2
        self.contexts: list = []

    def get_tensor_name(self, i):
        return ("x", "y")[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name == "x" else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.trt.DataType.FLOAT if name == "x" else self.out_dtype

    def create_execution_context(self, strategy=None):
        if self.context_none:
            return None
        ctx = FakeContext(self, strategy)
        self.contexts.append(ctx)
        return ctx


def fake_trt(version="10.12.0", out_dtype="FLOAT", context_none=False, log=None):
    trt = SimpleNamespace(__version__=version)
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = _Enum("INPUT", "OUTPUT")
    trt.DataType = _Enum("FLOAT", "HALF", "BF16", "INT32", "INT64", "INT8", "UINT8", "BOOL", "FP8")
    trt.ExecutionContextAllocationStrategy = _Enum("STATIC", "ON_PROFILE_CHANGE", "USER_MANAGED")
    trt.BuilderFlag = _Enum("TF32", "SPARSE_WEIGHTS")
    trt.PreviewFeature = _Enum("RUNTIME_ACTIVATION_RESIZE_10_10")
    trt.MemoryPoolType = _Enum("WORKSPACE")
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
    trt.engines = []
    log = log if log is not None else []
    trt.log = log

    class Runtime:
        def __init__(self, logger):
            log.append(("Runtime", current_device()))

        def deserialize_cuda_engine(self, data):
            log.append(("deserialize", current_device()))
            engine = FakeEngine(trt, getattr(trt.DataType, out_dtype), context_none)
            trt.engines.append(engine)
            return engine

    trt.Runtime = Runtime
    return trt


_DEVICE_STACK: list = []


def current_device():
    return _DEVICE_STACK[-1] if _DEVICE_STACK else None


@contextlib.contextmanager
def recording_guard(device):
    _DEVICE_STACK.append(str(device))
    try:
        yield
    finally:
        _DEVICE_STACK.pop()


class FakeRuns:
    """AsyncRuns' interface: records begin/end and what each run keeps alive."""

    def __init__(self):
        self.events: list = []
        self.kept: list[tuple] = []
        self.handle = STREAM

    def begin(self):
        self.events.append(("begin", current_device()))
        return SimpleNamespace(cuda_stream=STREAM)

    def end(self, keep):
        self.events.append(("end",))
        self.kept.append(tuple(keep))


@pytest.fixture(autouse=True)
def _guard(monkeypatch):
    monkeypatch.setattr(trt_backend, "device_guard", recording_guard)


def make_engine(trt, device="cpu"):
    runs = FakeRuns()
    return _Engine(trt, b"plan", torch.device(device), runs, "key_encoder"), runs


def test_context_uses_the_user_managed_strategy_and_sizes_memory_per_call():
    trt = fake_trt()
    engine, runs = make_engine(trt)
    ctx = trt.engines[0].contexts[0]
    assert ctx.strategy == trt.ExecutionContextAllocationStrategy.USER_MANAGED
    out = engine.run({"x": torch.rand(1, 3, 4, 5)})
    assert out["y"].shape == (1, 2, 4, 5) and out["y"].dtype == torch.float32
    names = [c[0] for c in ctx.calls]
    # memory is asked for after the shapes are set, handed over before the run
    assert names.index("update_device_memory_size_for_shapes") > names.index("set_input_shape")
    assert names.index("set_device_memory") < names.index("execute_async_v3")
    (_, ptr, size), = [c for c in ctx.calls if c[0] == "set_device_memory"]
    assert size >= 1000 and ptr == engine._scratch.data_ptr()
    # a larger call grows the buffer; the old one stays referenced until that run ends
    old = engine._scratch
    ctx.need = 5000
    engine.run({"x": torch.rand(2, 3, 4, 5)})
    assert engine._scratch.numel() >= 5000 and engine._scratch is not old
    assert any(t is old for t in runs.kept[-1])


def test_a_context_that_cannot_be_created_is_refused_with_a_message():
    with pytest.raises(BackendUnavailable, match="could not create an execution context"):
        make_engine(fake_trt(context_none=True))


def test_refused_shapes_and_addresses_raise():
    trt = fake_trt()
    engine, _ = make_engine(trt)
    ctx = trt.engines[0].contexts[0]
    ctx.refuse_shape = True
    with pytest.raises(ValueError, match="outside the engine's profile"):
        engine.run({"x": torch.rand(1, 3, 4, 5)})
    ctx.refuse_shape, ctx.refuse_address = False, True
    with pytest.raises(RuntimeError, match="refused the address"):
        engine.run({"x": torch.rand(1, 3, 4, 5)})
    assert not any(c[0] == "execute_async_v3" for c in ctx.calls)


def test_run_goes_on_a_non_default_stream_and_keeps_its_tensors():
    trt = fake_trt()
    engine, runs = make_engine(trt)
    ctx = trt.engines[0].contexts[0]
    x = torch.rand(1, 3, 4, 5, dtype=torch.float64)  # converted: a temporary the run reads
    out = engine.run({"x": x})
    (_, handle), = [c for c in ctx.calls if c[0] == "execute_async_v3"]
    assert handle == STREAM != 0
    assert [e[0] for e in runs.events] == ["begin", "end"]
    kept = runs.kept[0]
    input_ptr = [c[2] for c in ctx.calls if c[:2] == ("set_tensor_address", "x")][0]
    assert any(isinstance(t, torch.Tensor) and t.data_ptr() == input_ptr for t in kept)
    assert any(t is out["y"] for t in kept)


def test_engine_output_dtype_is_allocated_as_the_engine_writes_it():
    trt = fake_trt(out_dtype="HALF")
    engine, runs = make_engine(trt)
    out = engine.run({"x": torch.rand(1, 3, 4, 5)})
    written = [t for t in runs.kept[0] if isinstance(t, torch.Tensor) and t.dtype == torch.float16]
    assert len(written) == 1 and written[0].shape == (1, 2, 4, 5)
    assert out["y"].dtype == torch.float32
    with pytest.raises(BackendUnavailable, match="no torch equivalent"):
        make_engine(fake_trt(out_dtype="FP8"))


def test_engines_are_loaded_and_run_with_the_device_current():
    trt = fake_trt()
    engine, runs = make_engine(trt, device="cuda:1")
    assert ("deserialize", "cuda:1") in trt.log and ("Runtime", "cuda:1") in trt.log
    assert trt.engines[0].contexts  # created inside the guard (checked through the log above)
    engine.device = torch.device("cpu")  # tensors of the fake run live on the CPU
    engine.run({"x": torch.rand(1, 3, 4, 5)})
    assert runs.events[0] == ("begin", "cpu")  # enqueued inside the device guard


# -- building -------------------------------------------------------------------------------
class FakeConfig:
    def __init__(self):
        self.flags_set, self.flags_cleared, self.preview, self.profiles = [], [], [], []

    def set_memory_pool_limit(self, pool, size):
        self.pool = (pool, size)

    def set_flag(self, flag):
        self.flags_set.append(flag)

    def clear_flag(self, flag):
        self.flags_cleared.append(flag)

    def set_preview_feature(self, feature, on):
        self.preview.append((feature, on))

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return 0


def add_builder(trt):
    trt.configs, trt.network_flags = [], []

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.network_flags.append(flags)
            return object()

        def create_builder_config(self):
            trt.configs.append(FakeConfig())
            return trt.configs[-1]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"serialized-engine"

    trt.Builder = Builder
    trt.OnnxParser = lambda network, logger: SimpleNamespace(parse_from_file=lambda path: True, num_errors=0)
    return trt


SHAPES = TrtProfile(max_hw=(256, 256), opt_hw=(128, 128), max_batch=2).shapes("key_encoder", (16, 8, 4))


def test_build_clears_tf32_unless_asked_and_records_it(tmp_path):
    trt = add_builder(fake_trt())
    data, settings = build_engine(trt, tmp_path / "g.onnx", SHAPES, 1 << 20)
    config = trt.configs[-1]
    assert trt.BuilderFlag.TF32 in config.flags_cleared and trt.BuilderFlag.TF32 not in config.flags_set
    assert settings["tf32"] is False and settings["strongly_typed"] is True
    assert (trt.PreviewFeature.RUNTIME_ACTIVATION_RESIZE_10_10, True) in config.preview
    assert config.profiles[0].shapes["image"] == SHAPES["image"]
    assert trt.network_flags == [1]  # TensorRT 10: the STRONGLY_TYPED creation flag
    _, settings = build_engine(trt, tmp_path / "g.onnx", SHAPES, 1 << 20, TrtBuildOptions(tf32=True))
    assert trt.BuilderFlag.TF32 in trt.configs[-1].flags_set and settings["tf32"] is True
    trt11 = add_builder(fake_trt(version="11.4.0"))
    build_engine(trt11, tmp_path / "g.onnx", SHAPES, 1 << 20)
    assert trt11.network_flags == [0]


def test_cache_is_vouched_for_by_itsfake_export_manifest(tmp_path):
    trt = add_builder(fake_trt())
    builds = []

    def counting_build(*args):
        builds.append(args)
        return build_engine(*args)

    ident = engine_identity("key_encoder", "ab" * 32, trt.__version__, "GPU", SHAPES, TrtBuildOptions(), 1 << 20)
    data, manifest = load_or_build(trt, tmp_path / "g.onnx", ident, SHAPES, 1 << 20, TrtBuildOptions(), tmp_path,
                                   build=counting_build)
    assert len(builds) == 1 and manifest["builder"]["tf32"] is False
    meta = next(tmp_path.glob("*.engine.json"))
    assert json.loads(meta.read_text())["identity"]["profile"]["image"][2] == [2, 3, 256, 256]
    load_or_build(trt, tmp_path / "g.onnx", ident, SHAPES, 1 << 20, TrtBuildOptions(), tmp_path, build=counting_build)
    assert len(builds) == 1  # loaded from the cache
    engine_file = next(tmp_path.glob("*.engine"))
    engine_file.write_bytes(b"tampered")
    load_or_build(trt, tmp_path / "g.onnx", ident, SHAPES, 1 << 20, TrtBuildOptions(), tmp_path, build=counting_build)
    assert len(builds) == 2 and engine_file.read_bytes() == b"serialized-engine"
    meta.write_text(json.dumps({"format": "stmae-trt-engine", "version": 99}))
    load_or_build(trt, tmp_path / "g.onnx", ident, SHAPES, 1 << 20, TrtBuildOptions(), tmp_path, build=counting_build)
    assert len(builds) == 3
    tf32 = engine_identity("key_encoder", "ab" * 32, trt.__version__, "GPU", SHAPES, TrtBuildOptions(tf32=True),
                           1 << 20)
    load_or_build(trt, tmp_path / "g.onnx", tf32, SHAPES, 1 << 20, TrtBuildOptions(tf32=True), tmp_path,
                  build=counting_build)
    assert len(builds) == 4 and len(list(tmp_path.glob("*.engine"))) == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_backend_builds_each_graph_for_its_profile_and_records_the_build(tmp_path, monkeypatch):
    trt = add_builder(fake_trt())
    monkeypatch.setattr(trt_backend, "_import_trt", lambda: trt)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    profile = TrtProfile.for_frames(120, 200, objects=3)
    assert profile.max_hw == (128, 208) and profile.max_objects == 3
    backend = TrtBackend(tmp_path, fake_export_manifest(tmp_path), torch.device("cpu"), profile, cache_dir=tmp_path / "cache",
                         runs=FakeRuns())
    assert set(backend.build_info) == {"key_encoder", "mask_autoencoder"}
    mask_profile = backend.build_info["mask_autoencoder"]["identity"]["profile"]
    assert mask_profile["coarse"] == [[1, 1, 8, 13], [1, 3, 8, 13], [1, 3, 8, 13]]
    assert all(info["builder"]["tf32"] is False for info in backend.build_info.values())
    with pytest.raises(ValueError, match="outside the engines' profile"):
        backend.segment(torch.rand(1, 3, 128, 208), SimpleNamespace(f16=None, f8=None, f4=None),
                        torch.rand(1, 4, 8, 13))


def test_profile_for_ort_tensorrt_provider_is_formatted_per_input():
    shapes = TrtProfile.for_frames(96, 128, objects=2).ort_provider_shapes("mask_autoencoder", (16, 8, 4))
    assert shapes["trt_profile_min_shapes"].split(",")[0] == "image:1x3x96x128"
    assert shapes["trt_profile_max_shapes"].endswith("coarse:1x2x6x8")
    assert shapes["trt_profile_opt_shapes"].count(":") == 5
