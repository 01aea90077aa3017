"""The TensorRT backend: engines built from the exported ONNX graphs (TensorRT 10.x / 11.x).

- Strongly typed networks only (TensorRT 11 removed the fp16/int8 builder flags): the
  precision is the graph's own (AutoCast fp16 Casts or int8 Q/DQ nodes from stmae-export).
  On TensorRT 10 the STRONGLY_TYPED creation flag is set; on 11 strong typing is always on.
- One optimization profile per engine covering batch, objects and H, W (multiples of 16)
  between :class:`TrtProfile`'s min and max.
- Engines are cached on disk, keyed by the graph's sha256, the profile, the TensorRT
  version and the GPU, so they are built once per machine.
- Execution on torch CUDA tensors: ``set_input_shape`` / ``set_tensor_address`` and
  ``execute_async_v3`` on torch's current stream; outputs are torch tensors.

Needs ``tensorrt`` and a CUDA GPU: ``pip install -e ".[tensorrt]"``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import BackendUnavailable
from ..export_manifest import KEY_ENCODER, MASK_AUTOENCODER, ExportManifest, load_manifest
from .base import KeyFeatures

_INSTALL = 'pip install -e ".[tensorrt]" (TensorRT 10.x or 11.x, a CUDA GPU)'


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"the tensorrt backend needs TensorRT: {_INSTALL}") from None
    return trt


@dataclass(frozen=True)
class TrtProfile:
    """Shape range of the engines: frames between min_hw and max_hw pixels (multiples of
    16), batch up to max_batch, objects up to max_objects; tuned for opt_*."""

    min_hw: tuple[int, int] = (64, 64)
    opt_hw: tuple[int, int] = (480, 864)
    max_hw: tuple[int, int] = (1088, 1920)
    opt_batch: int = 1
    max_batch: int = 4
    opt_objects: int = 2
    max_objects: int = 16
    workspace_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        for name in ("min_hw", "opt_hw", "max_hw"):
            h, w = getattr(self, name)
            if h % 16 or w % 16 or h < 16 or w < 16:
                raise ValueError(f"{name} must be multiples of 16, got {h}x{w}")
        if not (self.min_hw[0] <= self.opt_hw[0] <= self.max_hw[0] and self.min_hw[1] <= self.opt_hw[1] <= self.max_hw[1]):
            raise ValueError("profile sizes must satisfy min <= opt <= max")
        if not 1 <= self.opt_batch <= self.max_batch or not 1 <= self.opt_objects <= self.max_objects:
            raise ValueError("profile batch/objects must satisfy 1 <= opt <= max")

    def shapes(self, graph: str, channels: tuple[int, int, int]) -> dict[str, tuple[tuple, tuple, tuple]]:
        """{input: (min, opt, max)} for a graph."""
        c16, c8, c4 = channels
        out = {}
        for input_name, per in (("image", (3, 1)), ("f16", (c16, 16)), ("f8", (c8, 8)), ("f4", (c4, 4))):
            ch, div = per
            dims = []
            for batch, (h, w) in ((1, self.min_hw), (self.opt_batch, self.opt_hw), (self.max_batch, self.max_hw)):
                dims.append((batch, ch, h // div, w // div))
            out[input_name] = tuple(dims)
            if graph == KEY_ENCODER:
                break
        if graph == MASK_AUTOENCODER:
            out["coarse"] = tuple(
                (b, n, h // 16, w // 16)
                for b, n, (h, w) in ((1, 1, self.min_hw), (self.opt_batch, self.opt_objects, self.opt_hw),
                                     (self.max_batch, self.max_objects, self.max_hw))
            )
        return out


def _cache_dir() -> Path:
    return Path(os.environ.get("STMAE_TRT_CACHE", Path.home() / ".cache" / "stmae" / "trt"))


def build_engine(trt, onnx_path: Path, shapes: dict, workspace_bytes: int) -> bytes:
    """Parse the ONNX file into a strongly typed network and build a serialized engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    major = int(trt.__version__.split(".")[0])
    if major < 11:  # TensorRT 11 networks are always strongly typed
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    return bytes(serialized)


class _Engine:
    """One deserialized engine and its execution context."""

    def __init__(self, trt, engine_bytes: bytes, device: torch.device) -> None:
        self._trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendUnavailable("TensorRT could not deserialize a cached engine; delete the cache and retry")
        self.context = self.engine.create_execution_context()
        self.device = device
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keep = {}
        for name in self.inputs:
            tensor = feeds[name].to(device=self.device, dtype=torch.float32).contiguous()
            keep[name] = tensor
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=torch.float32, device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see its log)")
        return outputs


class TrtBackend:
    """Runs the two exported graphs as TensorRT engines on a CUDA device."""

    name = "tensorrt"

    def __init__(self, export_dir: Path, manifest: ExportManifest, device: torch.device, profile: TrtProfile,
                 cache_dir: Path | None = None) -> None:
        trt = _import_trt()
        self.manifest = manifest
        self.device = device
        self.precision = manifest.precision
        self.profile = profile
        key_graph = manifest.graphs[KEY_ENCODER]
        channels = tuple(int(key_graph.output(n).shape[1]) for n in ("f16", "f8", "f4"))
        cache = cache_dir or _cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        gpu = torch.cuda.get_device_name(device)
        self._engines = {}
        for graph in (KEY_ENCODER, MASK_AUTOENCODER):
            spec = manifest.graphs[graph]
            shapes = profile.shapes(graph, channels)
            key = hashlib.sha256(json.dumps(
                {"graph": spec.sha256, "profile": asdict(profile), "trt": trt.__version__, "gpu": gpu},
                sort_keys=True).encode()).hexdigest()[:24]
            path = cache / f"{graph}-{key}.engine"
            if path.is_file():
                data = path.read_bytes()
            else:
                with torch.cuda.device(device):
                    data = build_engine(trt, Path(export_dir) / spec.file, shapes, profile.workspace_bytes)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            self._engines[graph] = _Engine(trt, data, device)

    @classmethod
    def from_export_dir(cls, export_dir: str | Path, device: str | torch.device = "cuda",
                        profile: TrtProfile | None = None, cache_dir: str | Path | None = None) -> "TrtBackend":
        """Open an export folder (manifest and hashes checked) and build or load engines."""
        manifest = load_manifest(export_dir, verify_hashes=True)
        dev = torch.device(device)
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable(f"the tensorrt backend needs a CUDA device, got {device!r} "
                                     f"(CUDA available: {torch.cuda.is_available()})")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return cls(Path(export_dir), manifest, dev, profile or TrtProfile(), Path(cache_dir) if cache_dir else None)

    def _check_size(self, image: torch.Tensor) -> None:
        b, _, h, w = image.shape
        p = self.profile
        if not (p.min_hw[0] <= h <= p.max_hw[0] and p.min_hw[1] <= w <= p.max_hw[1] and b <= p.max_batch):
            raise ValueError(f"input {b}x{h}x{w} is outside the engines' profile {p}; build with a wider TrtProfile")

    @torch.inference_mode()
    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        """image (B, 3, H, W) float32 CUDA -> f16, f8, f4 float32 CUDA."""
        self._check_size(image)
        out = self._engines[KEY_ENCODER].run({"image": image})
        return KeyFeatures(out["f16"], out["f8"], out["f4"])

    @torch.inference_mode()
    def segment(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        """-> probabilities (B, N+1, H, W) float32 CUDA, background first."""
        self._check_size(image)
        if coarse.shape[1] > self.profile.max_objects:
            raise ValueError(f"{coarse.shape[1]} objects exceed the engines' max_objects={self.profile.max_objects}")
        feeds = {"image": image, "f16": features.f16, "f8": features.f8, "f4": features.f4, "coarse": coarse}
        return self._engines[MASK_AUTOENCODER].run(feeds)["prob"]
