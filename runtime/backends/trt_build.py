"""Building TensorRT engines from the exported ONNX graphs, and their on-disk cache.

- Strongly typed networks only (TensorRT 11 removed the fp16/int8 builder flags): the
  precision is the graph's own (AutoCast fp16 Casts or int8 Q/DQ nodes from stmae-export).
  On TensorRT 10 the STRONGLY_TYPED creation flag is set; on 11 strong typing is always on.
- TF32: TensorRT enables ``BuilderFlag.TF32`` by default, so the float32 layers of an
  engine (all of an fp32 export; the float32 islands of fp16/int8 ones) would run their
  matrix products with 10-bit mantissas. The toolkit clears the flag unless
  ``TrtBuildOptions(tf32=True)`` asks for it: "fp32" means IEEE fp32, as the parity gate
  of stmae-export measured it. The decision is recorded in the engine's manifest.
- ``PreviewFeature.RUNTIME_ACTIVATION_RESIZE_10_10`` is enabled where the TensorRT
  version has it, so that a context's activation memory follows the shapes actually run
  (``update_device_memory_size_for_shapes``) rather than the profile's maximum.
- Cache: ``<graph>-<key>.engine`` plus ``<graph>-<key>.engine.json``, its manifest (format,
  version, graph sha256, TensorRT version, GPU, profile shapes, builder settings, the
  engine's sha256). The key hashes all of these inputs. An engine whose manifest is
  missing, unknown or does not match is rebuilt, never loaded. Both files are written
  atomically (a temporary file in the cache folder, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stmae.atomic import atomic_write_bytes

from ..errors import BackendUnavailable

ENGINE_MANIFEST_FORMAT = "stmae-trt-engine"
ENGINE_MANIFEST_VERSION = 1


@dataclass(frozen=True)
class TrtBuildOptions:
    """tf32: allow TF32 in the engine's float32 layers (off: IEEE fp32);
    runtime_activation_resize: enable the activation-resize preview feature where the
    TensorRT version has it."""

    tf32: bool = False
    runtime_activation_resize: bool = True


def cache_dir() -> Path:
    """$STMAE_TRT_CACHE or ~/.cache/stmae/trt."""
    return Path(os.environ.get("STMAE_TRT_CACHE", Path.home() / ".cache" / "stmae" / "trt"))


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def build_engine(trt, onnx_path: Path, shapes: dict, workspace_bytes: int,
                 options: TrtBuildOptions = TrtBuildOptions()) -> tuple[bytes, dict]:
    """Parse the ONNX file into a strongly typed network and build a serialized engine.

    shapes: {input: (min, opt, max)}. Returns (engine bytes, builder settings applied)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if trt_major(trt) < 11:  # TensorRT 11 networks are always strongly typed
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    tf32_flag = getattr(trt.BuilderFlag, "TF32", None)
    if tf32_flag is not None:
        if options.tf32:
            config.set_flag(tf32_flag)
        else:
            config.clear_flag(tf32_flag)
    resize = getattr(getattr(trt, "PreviewFeature", None), "RUNTIME_ACTIVATION_RESIZE_10_10", None)
    resize_on = bool(options.runtime_activation_resize and resize is not None)
    if resize_on:
        config.set_preview_feature(resize, True)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(profile) < 0:
        raise BackendUnavailable(f"TensorRT rejected the optimization profile {shapes} for {onnx_path.name}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    settings = {
        "strongly_typed": True,
        "tf32": bool(options.tf32 and tf32_flag is not None),
        "tf32_flag_in_this_tensorrt": tf32_flag is not None,
        "runtime_activation_resize": resize_on,
        "workspace_bytes": int(workspace_bytes),
    }
    return bytes(serialized), settings


def _atomic_write(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, then rename (:mod:`stmae.atomic`:
    umask permissions, fsync, temp removed on failure)."""
    atomic_write_bytes(path, data, durable=True)


def _jsonable_shapes(shapes: dict) -> dict:
    return {name: [list(map(int, s)) for s in dims] for name, dims in shapes.items()}


def engine_identity(graph: str, graph_sha256: str, trt_version: str, gpu: str, shapes: dict,
                    options: TrtBuildOptions, workspace_bytes: int) -> dict:
    """Everything an engine depends on (its cache key hashes this)."""
    return {"graph": graph, "graph_sha256": graph_sha256, "tensorrt": str(trt_version), "gpu": gpu,
            "profile": _jsonable_shapes(shapes), "options": asdict(options), "workspace_bytes": int(workspace_bytes)}


def _read_manifest(path: Path, identity: dict, engine: bytes) -> str | None:
    """None if the manifest describes this engine, else why not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"unreadable manifest ({exc})"
    if not isinstance(data, dict) or data.get("format") != ENGINE_MANIFEST_FORMAT:
        return "not an stmae engine manifest"
    if data.get("version") != ENGINE_MANIFEST_VERSION:
        return f"engine manifest version {data.get('version')!r} unknown to this runtime"
    if data.get("identity") != identity:
        return "built for other inputs"
    if data.get("engine_sha256") != hashlib.sha256(engine).hexdigest():
        return "engine file does not match its manifest"
    return None


def load_or_build(trt, onnx_path: Path, identity: dict, shapes: dict, workspace_bytes: int,
                  options: TrtBuildOptions, folder: Path, build=build_engine) -> tuple[bytes, dict]:
    """The cached engine for ``identity`` if its manifest vouches for it, else a new build
    (written with its manifest). Returns (engine bytes, manifest dict)."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{identity['graph']}-{key}.engine"
    meta = path.with_name(path.name + ".json")
    if path.is_file() and meta.is_file():
        data = path.read_bytes()
        if _read_manifest(meta, identity, data) is None:
            return data, json.loads(meta.read_text(encoding="utf-8"))
    data, settings = build(trt, onnx_path, shapes, workspace_bytes, options)
    manifest = {
        "format": ENGINE_MANIFEST_FORMAT,
        "version": ENGINE_MANIFEST_VERSION,
        "identity": identity,
        "builder": settings,
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _atomic_write(path, data)
    _atomic_write(meta, (json.dumps(manifest, indent=2) + "\n").encode())
    return data, manifest
