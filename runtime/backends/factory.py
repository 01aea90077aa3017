"""Build a backend by name: 'torch' from a checkpoint, 'onnxruntime' / 'tensorrt' from
an export folder (``stmae-export`` output with its ``manifest.json``).

The ONNX Runtime and TensorRT backends are imported only when asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

import torch

from stmae.checkpoint import load_checkpoint

from ..cpus import usable_cpus
from ..errors import BackendUnavailable
from .base import Backend
from .torch_backend import TorchBackend, resolve_device

BACKENDS = ("torch", "onnxruntime", "tensorrt")
TORCH_OPTIONS = ("tf32",)  # keyword arguments of TorchBackend
_EXPORT_BACKENDS = {
    # name: (module, class, what to install if its library is missing)
    "onnxruntime": ("runtime.backends.ort_backend", "OrtBackend", "pip install onnxruntime-gpu (or onnxruntime)"),
    "tensorrt": ("runtime.backends.trt_backend", "TrtBackend", 'pip install -e ".[tensorrt]"'),
}


def _import_export_backend(name: str):
    module_name, class_name, install = _EXPORT_BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BackendUnavailable(
                f"the {name} backend is not part of this installation ({module_name} is missing)"
            ) from None
        raise BackendUnavailable(
            f"the {name} backend needs the Python package {exc.name!r}, which is not installed: {install}"
        ) from None
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise BackendUnavailable(f"{module_name} does not define {class_name}") from None


def create_backend(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    export_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
) -> Backend:
    """Create a backend.

    name: 'torch' (needs ``checkpoint``; ``precision`` fp32, or fp16/bf16 on CUDA),
    'onnxruntime' or 'tensorrt' (need ``export_dir``; the precision is the export's).
    options: for 'torch' ``{"tf32": bool}`` (allow TF32 on CUDA; default no, IEEE
    float32); for the others keyword arguments of the export backend's
    ``from_export_dir``, e.g. ``{"profile": TrtProfile.for_frames(480, 864, objects=2),
    "tf32": False}`` for 'tensorrt', ``{"trt_profile": ..., "providers": [...], "tf32":
    False}`` for 'onnxruntime'. Every backend takes ``tf32``.
    Raises BackendUnavailable or stmae.CheckpointError with a message saying what to do.
    """
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "torch":
        unknown = sorted(set(options or {}) - set(TORCH_OPTIONS))
        if unknown:
            raise BackendUnavailable(f"the torch backend takes the options {list(TORCH_OPTIONS)}, got {unknown}")
        if checkpoint is None:
            raise BackendUnavailable("the torch backend needs a checkpoint (--checkpoint FILE)")
        dev = resolve_device(device)
        if dev.type == "cpu" and torch.get_num_threads() > usable_cpus():
            # torch counts the machine's cores; under a cgroup quota its extra threads only queue
            torch.set_num_threads(usable_cpus())
        loaded = load_checkpoint(checkpoint, device="cpu")
        return TorchBackend(loaded.model, dev, precision, **dict(options or {}))
    if export_dir is None:
        raise BackendUnavailable(f"the {name} backend needs an export folder (--export-dir DIR, made by stmae-export)")
    export_dir = Path(export_dir)
    if not (export_dir / "manifest.json").is_file():
        raise BackendUnavailable(
            f"{export_dir} is not an export folder (no manifest.json); create one with stmae-export"
        )
    cls = _import_export_backend(name)
    return cls.from_export_dir(export_dir, device=device, **dict(options or {}))
