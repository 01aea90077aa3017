"""The ONNX Runtime backend: the two exported graphs of an ``stmae-export`` folder.

- The manifest is read and checked first (:mod:`runtime.export_manifest`): an unknown
  contract version or a file whose sha256 differs is refused.
- Execution providers: TensorRT > CUDA > CPU among those this ONNX Runtime build offers
  when ``device`` is CUDA; the CPU provider for ``device='cpu'``; or exactly the list the
  user gives (``providers``).
- Every run goes through I/O binding over torch tensors: inputs are bound at their
  ``data_ptr()`` and outputs are allocated as torch tensors on ``device`` and bound too, so
  ONNX Runtime reads and writes torch memory directly. On CUDA, features never leave the
  GPU; on the CPU, the key encoder's f16/f8/f4 are the very buffers the mask autoencoder
  reads (no copy between the two graphs).
- CPU threads: ``intra_op_threads`` or the cores this process may use. On the CPU the
  intra-op threads do not spin-wait after a run (``allow_spinning`` False): the memory
  readout and the pre- and post-processing run in torch on the same cores right after
  each graph, and spinning threads would take the cores from them (measured at 480x864,
  int8: frame p50 781 -> 751 ms).
- Graph transformers the manifest names in ``onnxruntime_disabled_optimizers`` are
  switched off (int8 exports keep a Q/DQ pair per reader of a tensor, which common
  subexpression elimination would merge back, leaving those convolutions float32).

Graph inputs and outputs are float32 whatever the export precision (precision lives in the
graph: fp16 Casts or int8 Q/DQ nodes inside).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import BackendUnavailable
from ..export_manifest import (
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    KEY_ENCODER,
    MASK_AUTOENCODER,
    ExportManifest,
    load_manifest,
)
from .base import KeyFeatures

_INSTALL = "pip install onnxruntime-gpu (Linux x86_64 with CUDA) or onnxruntime"
_PREFERRED_GPU = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable(f"the onnxruntime backend needs ONNX Runtime: {_INSTALL}") from None
    return ort


def available_cpu_cores() -> int:
    """Cores this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BackendUnavailable(f"unknown device {device!r} ({exc}); use 'cpu' or 'cuda:0'") from None
    if dev.type not in ("cpu", "cuda"):
        raise BackendUnavailable(f"the onnxruntime backend runs on 'cpu' or 'cuda', not {dev.type!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
        dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    return dev


def default_providers(device: torch.device, available: Sequence[str]) -> list[str]:
    """TensorRT > CUDA > CPU (those available) on CUDA; the CPU provider on the CPU."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    chosen = [p for p in _PREFERRED_GPU if p in available]
    if "CUDAExecutionProvider" not in chosen and "TensorrtExecutionProvider" not in chosen:
        raise BackendUnavailable(
            f"device {device} asked for, but this ONNX Runtime has no GPU provider "
            f"(available: {list(available)}); install onnxruntime-gpu or use --device cpu"
        )
    return chosen


def _provider_options(name: str, device: torch.device, cache_dir: Path) -> dict:
    if name == "CUDAExecutionProvider":
        return {"device_id": device.index or 0}
    if name == "TensorrtExecutionProvider":
        return {
            "device_id": device.index or 0,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir),
        }
    return {}


class OrtBackend:
    """Runs ``key_encoder.onnx`` and ``mask_autoencoder.onnx`` with ONNX Runtime.

    Use :meth:`from_export_dir`. Attributes: name 'onnxruntime', device (torch.device of
    the tensors it takes and returns), precision (the export's), manifest, providers (the
    providers each session actually uses).
    """

    name = "onnxruntime"

    def __init__(
        self,
        export_dir: str | Path,
        manifest: ExportManifest,
        device: torch.device,
        providers: Sequence[str | tuple[str, dict]] | None = None,
        intra_op_threads: int | None = None,
        allow_spinning: bool | None = None,
    ) -> None:
        ort = _import_ort()
        self.manifest = manifest
        self.device = device
        self.precision = manifest.precision
        self.export_dir = Path(export_dir)
        available = ort.get_available_providers()
        if providers is None:
            names = default_providers(device, available)
            cache = Path(os.environ.get("STMAE_TRT_CACHE", Path.home() / ".cache" / "stmae" / "trt"))
            if "TensorrtExecutionProvider" in names:
                cache.mkdir(parents=True, exist_ok=True)
            chosen = [(n, _provider_options(n, device, cache)) for n in names]
        else:
            chosen = [p if isinstance(p, tuple) else (p, {}) for p in providers]
            missing = [n for n, _ in chosen if n not in available]
            if missing:
                raise BackendUnavailable(
                    f"execution provider(s) {missing} are not in this ONNX Runtime build "
                    f"(available: {available}); {_INSTALL}"
                )
            if device.type == "cuda" and not any(n != "CPUExecutionProvider" for n, _ in chosen):
                raise BackendUnavailable("device is CUDA but only the CPU provider was asked for")
        if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 1):
            raise ValueError(f"intra_op_threads must be a positive integer, got {intra_op_threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or available_cpu_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.allow_spinning = device.type != "cpu" if allow_spinning is None else bool(allow_spinning)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        self.threads = options.intra_op_num_threads
        self._sessions = {
            name: self._session(
                ort, self.export_dir / manifest.graphs[name].file, options, chosen,
                manifest.onnxruntime_disabled_optimizers,
            )
            for name in (KEY_ENCODER, MASK_AUTOENCODER)
        }
        self.providers = {name: s.get_providers() for name, s in self._sessions.items()}
        self._check_io()
        self._channels = tuple(int(manifest.graphs[KEY_ENCODER].output(n).shape[1]) for n in ("f16", "f8", "f4"))

    @staticmethod
    def _session(ort, path: Path, options, chosen, disabled: Sequence[str] = ()):
        try:
            return ort.InferenceSession(
                str(path), sess_options=options, providers=chosen, disabled_optimizers=list(disabled) or None
            )
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            names = [n for n, _ in chosen]
            if "TensorrtExecutionProvider" in names and len(names) > 1:
                # The TensorRT provider is listed by onnxruntime-gpu even where the TensorRT
                # libraries are absent; fall back to the next providers.
                rest = [p for p in chosen if p[0] != "TensorrtExecutionProvider"]
                return OrtBackend._session(ort, path, options, rest, disabled)
            raise BackendUnavailable(f"ONNX Runtime cannot load {path.name}: {exc}") from None

    def _check_io(self) -> None:
        for name, session in self._sessions.items():
            got_in = tuple(i.name for i in session.get_inputs())
            got_out = tuple(o.name for o in session.get_outputs())
            if got_in != GRAPH_INPUTS[name] or got_out != GRAPH_OUTPUTS[name]:
                raise BackendUnavailable(
                    f"{name} graph has I/O {got_in} -> {got_out}, expected "
                    f"{GRAPH_INPUTS[name]} -> {GRAPH_OUTPUTS[name]}; re-export the checkpoint"
                )
            for value in list(session.get_inputs()) + list(session.get_outputs()):
                if value.type != "tensor(float)":
                    raise BackendUnavailable(
                        f"{name} graph tensor {value.name} is {value.type}; this backend binds "
                        f"float32 graph I/O (re-export with stmae-export)"
                    )

    @classmethod
    def from_export_dir(
        cls,
        export_dir: str | Path,
        device: str | torch.device = "cpu",
        providers: Sequence[str | tuple[str, dict]] | None = None,
        intra_op_threads: int | None = None,
        allow_spinning: bool | None = None,
    ) -> "OrtBackend":
        """Open an export folder (manifest checked: contract version and sha256 of both
        graphs) on ``device`` ('cpu' or 'cuda[:i]'). allow_spinning: whether idle intra-op
        threads spin-wait (None: not on the CPU, yes on CUDA). Raises ExportManifestError or
        BackendUnavailable with a message saying what to do."""
        manifest = load_manifest(export_dir, verify_hashes=True)
        return cls(export_dir, manifest, _resolve_device(device), providers, intra_op_threads, allow_spinning)

    # -- binding ---------------------------------------------------------------------------
    def _prepare(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        if tensor.device != self.device:
            raise ValueError(f"{what} is on {tensor.device}, the backend runs on {self.device}")
        return tensor.detach().to(torch.float32).contiguous()

    def _bind_input(self, binding, name: str, tensor: torch.Tensor) -> None:
        binding.bind_input(
            name, self.device.type, self.device.index or 0, np.float32, tuple(tensor.shape), tensor.data_ptr()
        )

    def _bind_output(self, binding, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        out = torch.empty(shape, dtype=torch.float32, device=self.device)
        binding.bind_output(name, self.device.type, self.device.index or 0, np.float32, shape, out.data_ptr())
        return out

    def _run(self, graph: str, inputs: dict[str, torch.Tensor], outputs: dict[str, tuple[int, ...]]):
        session = self._sessions[graph]
        binding = session.io_binding()
        for name, tensor in inputs.items():
            self._bind_input(binding, name, tensor)
        result = {name: self._bind_output(binding, name, shape) for name, shape in outputs.items()}
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch
            binding.synchronize_inputs()
        session.run_with_iobinding(binding)
        if self.device.type == "cuda":
            binding.synchronize_outputs()
        return result

    # -- the Backend protocol -------------------------------------------------------------
    @torch.inference_mode()
    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        """image (B, 3, H, W) float32 normalized, H and W multiples of 16 ->
        f16 (B, C16, H/16, W/16), f8, f4 float32 on ``device``."""
        image = self._prepare(image, "image")
        b, _, h, w = image.shape
        if h % 16 or w % 16:
            raise ValueError(f"image height and width must be multiples of 16, got {h}x{w}")
        c16, c8, c4 = self._channels
        out = self._run(
            KEY_ENCODER,
            {"image": image},
            {"f16": (b, c16, h // 16, w // 16), "f8": (b, c8, h // 8, w // 8), "f4": (b, c4, h // 4, w // 4)},
        )
        return KeyFeatures(out["f16"], out["f8"], out["f4"])

    @torch.inference_mode()
    def segment(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W), features of that image, coarse (B, N, H/16, W/16) float32 ->
        probabilities (B, N+1, H, W) float32 on ``device``, background first."""
        image = self._prepare(image, "image")
        b, _, h, w = image.shape
        coarse = self._prepare(coarse, "coarse")
        inputs = {
            "image": image,
            "f16": self._prepare(features.f16, "f16"),
            "f8": self._prepare(features.f8, "f8"),
            "f4": self._prepare(features.f4, "f4"),
            "coarse": coarse,
        }
        out = self._run(MASK_AUTOENCODER, inputs, {"prob": (b, coarse.shape[1] + 1, h, w)})
        return out["prob"]
