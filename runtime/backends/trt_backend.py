"""The TensorRT backend: engines built from the exported ONNX graphs (TensorRT 10.x / 11.x).

- Engines: built once per machine and cached with a manifest (:mod:`.trt_build`: strongly
  typed, TF32 off unless asked, the decision recorded). One optimization profile per
  engine, :class:`TrtProfile` (size it from the session: ``TrtProfile.for_frames``).
- Device: engines are deserialized, their contexts created and every run enqueued with
  ``device`` current (``torch.cuda.device(device)``), not whatever GPU happens to be.
- Memory: contexts use ``ExecutionContextAllocationStrategy.USER_MANAGED``. Before each
  run the backend asks ``update_device_memory_size_for_shapes()`` what the shapes of this
  call need and hands TensorRT a torch-allocated buffer of that size (grown when a larger
  call comes), instead of the static strategy's reservation for the profile's largest
  shape (4 frames x 16 objects x 1088x1920 by default: many GB per context).
- Checks: a context that cannot be created (None), ``set_input_shape`` /
  ``set_tensor_address`` returning False, output shapes left unresolved, and engine I/O
  dtypes torch cannot hold are refused with a message. Outputs are allocated in the dtype
  the engine writes and returned as float32.
- Streams: runs go on the backend's own non-default stream, ordered with torch's current
  stream by events (:class:`.async_run.AsyncRuns`); the input, output and scratch
  tensors of a run stay referenced until its event completes.

Needs ``tensorrt`` and a CUDA GPU: ``pip install -e ".[tensorrt]"``. None of this ran in
the session that wrote it (no GPU, no TensorRT): tests/runtime/test_trt_backend_api.py
checks the calls against a recording fake of the TensorRT API.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

from ..errors import BackendUnavailable
from ..export_manifest import KEY_ENCODER, MASK_AUTOENCODER, ExportManifest, layout_warning, load_manifest
from .async_run import AsyncRuns
from .base import KeyFeatures
from .trt_build import TrtBuildOptions, build_engine, cache_dir, engine_identity, load_or_build
from .trt_profile import TrtProfile

__all__ = ["TrtBackend", "TrtBuildOptions", "TrtProfile", "build_engine"]

_INSTALL = 'pip install -e ".[tensorrt]" (TensorRT 10.x or 11.x, a CUDA GPU)'


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"the tensorrt backend needs TensorRT: {_INSTALL}") from None
    return trt


def device_guard(device: torch.device):
    """``device`` current for the block (CUDA); nothing for other devices."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def torch_dtype(trt, trt_type) -> torch.dtype:
    """torch dtype of a TensorRT DataType, or BackendUnavailable."""
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}
    for name, dtype in table.items():
        if getattr(trt.DataType, name, None) == trt_type:
            return dtype
    raise BackendUnavailable(f"engine tensor type {trt_type} has no torch equivalent; rebuild from a standard export")


def _create_context(trt, engine):
    """(context, user_managed): a context without TensorRT's static reservation where the
    TensorRT version offers the user-managed strategy."""
    strategy = getattr(getattr(trt, "ExecutionContextAllocationStrategy", None), "USER_MANAGED", None)
    if strategy is not None:
        return engine.create_execution_context(strategy), True
    return engine.create_execution_context(), False


class _Engine:
    """One deserialized engine, its execution context and its run bookkeeping."""

    def __init__(self, trt, engine_bytes: bytes, device: torch.device, runs: AsyncRuns, label: str) -> None:
        self.device = device
        self.runs = runs
        self.label = label
        with device_guard(device):
            self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise BackendUnavailable(f"TensorRT could not deserialize the {label} engine; delete the "
                                         f"engine cache ($STMAE_TRT_CACHE) and retry")
            self.context, self.user_managed = _create_context(trt, self.engine)
        if self.context is None:
            raise BackendUnavailable(
                f"TensorRT could not create an execution context for the {label} engine on {device} "
                f"(out of GPU memory?); free GPU memory or build with a smaller TrtProfile"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self._scratch: torch.Tensor | None = None

    def _device_memory(self, keep: list) -> None:
        """Give the context memory for the shapes just set (user-managed strategy)."""
        need = int(self.context.update_device_memory_size_for_shapes())
        if need <= 0:
            return
        if self._scratch is None or self._scratch.numel() < need:
            if self._scratch is not None:
                keep.append(self._scratch)  # runs in flight may still use the old buffer
            self._scratch = torch.empty(need, dtype=torch.uint8, device=self.device)
        if hasattr(self.context, "set_device_memory"):  # TensorRT >= 10.1
            self.context.set_device_memory(self._scratch.data_ptr(), self._scratch.numel())
        else:
            self.context.device_memory = self._scratch.data_ptr()
        keep.append(self._scratch)

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """feeds: {input: tensor} -> {output: float32 tensor on device}, asynchronously
        ordered with torch's current stream."""
        ctx = self.context
        keep: list = []
        with device_guard(self.device):
            for name in self.inputs:
                tensor = feeds[name].to(device=self.device, dtype=self.dtypes[name]).contiguous()
                keep.append(tensor)
                if not ctx.set_input_shape(name, tuple(tensor.shape)):
                    raise ValueError(f"TensorRT refused {self.label} input {name} of shape {tuple(tensor.shape)}: "
                                     f"outside the engine's profile; build with a TrtProfile that covers it")
                if not ctx.set_tensor_address(name, tensor.data_ptr()):
                    raise RuntimeError(f"TensorRT refused the address of {self.label} input {name}")
            unresolved = ctx.infer_shapes()
            if unresolved:
                raise RuntimeError(f"TensorRT could not infer the shapes of {list(unresolved)} ({self.label})")
            outputs = {}
            for name in self.outputs:
                shape = tuple(ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT left output {name} of {self.label} unresolved: {shape}")
                out = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                if not ctx.set_tensor_address(name, out.data_ptr()):
                    raise RuntimeError(f"TensorRT refused the address of {self.label} output {name}")
                outputs[name] = out
                keep.append(out)
            if self.user_managed:
                self._device_memory(keep)
            stream = self.runs.begin()
            ok = ctx.execute_async_v3(stream.cuda_stream)
            self.runs.end(keep)
        if not ok:
            raise RuntimeError(f"TensorRT execution of the {self.label} engine failed (see its log)")
        return {n: t if t.dtype == torch.float32 else t.float() for n, t in outputs.items()}


class TrtBackend:
    """Runs the two exported graphs as TensorRT engines on a CUDA device.

    build_info: {graph: the engine manifest (identity, builder settings incl. tf32)}."""

    name = "tensorrt"

    def __init__(self, export_dir: Path, manifest: ExportManifest, device: torch.device, profile: TrtProfile,
                 cache_dir: Path | None = None, options: TrtBuildOptions = TrtBuildOptions(),
                 runs: AsyncRuns | None = None) -> None:
        trt = _import_trt()
        self.manifest = manifest
        self.device = device
        self.precision = manifest.precision
        warning = layout_warning(manifest, "tensorrt")
        if warning:
            print(f"stmae: warning: {warning}", file=sys.stderr, flush=True)
        self.profile = profile
        self.options = options
        key_graph = manifest.graphs[KEY_ENCODER]
        channels = tuple(int(key_graph.output(n).shape[1]) for n in ("f16", "f8", "f4"))
        folder = cache_dir or _default_cache_dir()
        gpu = torch.cuda.get_device_name(device)
        with device_guard(device):
            self.runs = runs or AsyncRuns(device)
        self._engines: dict[str, _Engine] = {}
        self.build_info: dict[str, dict] = {}
        for graph in (KEY_ENCODER, MASK_AUTOENCODER):
            spec = manifest.graphs[graph]
            shapes = profile.shapes(graph, channels)
            identity = engine_identity(graph, spec.sha256, trt.__version__, gpu, shapes, options,
                                       profile.workspace_bytes)
            with device_guard(device):
                data, info = load_or_build(trt, Path(export_dir) / spec.file, identity, shapes,
                                           profile.workspace_bytes, options, folder)
            self.build_info[graph] = info
            self._engines[graph] = _Engine(trt, data, device, self.runs, graph)

    @classmethod
    def from_export_dir(cls, export_dir: str | Path, device: str | torch.device = "cuda",
                        profile: TrtProfile | None = None, cache_dir: str | Path | None = None,
                        tf32: bool = False) -> "TrtBackend":
        """Open an export folder (manifest and hashes checked) and build or load engines
        on ``device``. profile: the shapes the engines accept (default: any video up to
        4 x 16 objects x 1088x1920; a session's own ``TrtProfile.for_frames`` builds
        smaller, faster engines); tf32: allow TF32 in float32 layers (default: no)."""
        manifest = load_manifest(export_dir, verify_hashes=True)
        dev = torch.device(device)
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable(f"the tensorrt backend needs a CUDA device, got {device!r} "
                                     f"(CUDA available: {torch.cuda.is_available()})")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return cls(Path(export_dir), manifest, dev, profile or TrtProfile(), Path(cache_dir) if cache_dir else None,
                   TrtBuildOptions(tf32=tf32))

    def _check_size(self, image: torch.Tensor, objects: int = 1) -> None:
        b, _, h, w = image.shape
        if not self.profile.covers(b, h, w, objects):
            raise ValueError(f"input {b} frame(s) x {objects} object(s) x {h}x{w} is outside the engines' profile "
                             f"{self.profile}; build with a TrtProfile that covers it")

    @torch.inference_mode()
    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        """image (B, 3, H, W) float32 CUDA -> f16, f8, f4 float32 CUDA."""
        self._check_size(image)
        out = self._engines[KEY_ENCODER].run({"image": image})
        return KeyFeatures(out["f16"], out["f8"], out["f4"])

    @torch.inference_mode()
    def segment(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        """-> probabilities (B, N+1, H, W) float32 CUDA, background first."""
        self._check_size(image, coarse.shape[1])
        feeds = {"image": image, "f16": features.f16, "f8": features.f8, "f4": features.f4, "coarse": coarse}
        return self._engines[MASK_AUTOENCODER].run(feeds)["prob"]


def _default_cache_dir() -> Path:
    return cache_dir()
