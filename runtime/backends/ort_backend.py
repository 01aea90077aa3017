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

- On CUDA (not run in the session that wrote this: no GPU, no onnxruntime-gpu there;
  tests/runtime/test_ort_backend_api.py checks the calls against a recording fake):
  - the CUDA and TensorRT providers get ``device_id`` of ``device`` and the backend's own
    non-default stream as ``user_compute_stream``; a run is ordered with torch's current
    stream by events and ``disable_synchronize_execution_providers`` (no host syncs; the
    run's tensors stay referenced until its event completes, :mod:`.async_run`);
  - the TensorRT provider gets ``trt_profile_min/opt/max_shapes`` from a
    :class:`TrtProfile` (default: any video up to 4 x 16 objects x 1088x1920) besides its
    engine and timing caches, so it builds once per profile instead of whenever a shape
    changes (a new object, another video size);
  - TF32: the CUDA provider gets ``use_tf32=0`` unless ``tf32=True`` (fp32 means IEEE
    fp32). ONNX Runtime's TensorRT provider has no TF32 option: its engines keep
    TensorRT's default (TF32 allowed in float32 layers); use the tensorrt backend where
    that matters.

Graph inputs and outputs are float32 whatever the export precision (precision lives in the
graph: fp16 Casts or int8 Q/DQ nodes inside).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..cpus import usable_cpus
from ..errors import BackendUnavailable
from ..export_manifest import (
    layout_warning,
    GRAPH_INPUTS,
    GRAPH_OUTPUTS,
    KEY_ENCODER,
    MASK_AUTOENCODER,
    ExportManifest,
    load_manifest,
)
from .async_run import AsyncRuns
from .base import KeyFeatures
from .trt_profile import TrtProfile

_INSTALL = "pip install onnxruntime-gpu (Linux x86_64 with CUDA) or onnxruntime"
_PREFERRED_GPU = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
NO_SYNC = "disable_synchronize_execution_providers"


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable(f"the onnxruntime backend needs ONNX Runtime: {_INSTALL}") from None
    return ort


def available_cpu_cores() -> int:
    """CPUs this process may use (affinity capped by the cgroup quota,
    :func:`runtime.cpus.usable_cpus`), at least 1: the default intra-op thread count."""
    return usable_cpus()


def session_options(ort, intra_op_threads: int, allow_spinning: bool):
    """The SessionOptions every session of this backend gets (``ort``: the onnxruntime
    module): ``intra_op_threads`` threads, one inter-op thread, all graph optimizations,
    warnings off, spin-waiting only if ``allow_spinning``. ``export.int8_layout`` times
    candidate graphs with the same options."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


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


def provider_options(name: str, device: torch.device, cache_dir: Path, stream: int | None = None,
                     trt_shapes: dict[str, str] | None = None, tf32: bool = False) -> dict:
    """Options of a GPU execution provider for one graph's session.

    stream: the cudaStream_t the provider computes on (never 0: ONNX Runtime treats 0 as
    no stream); trt_shapes: TrtProfile.ort_provider_shapes(graph, channels)."""
    options: dict = {}
    if name in _GPU_PROVIDERS:
        options["device_id"] = device.index or 0
        if stream:
            options["has_user_compute_stream"] = "1"
            options["user_compute_stream"] = str(int(stream))
    if name == "CUDAExecutionProvider":
        options["use_tf32"] = "1" if tf32 else "0"
    if name == "TensorrtExecutionProvider":
        options.update({
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir),
        })
        options.update(trt_shapes or {})
    return options


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
        trt_profile: TrtProfile | None = None,
        tf32: bool = False,
        runs: AsyncRuns | None = None,
    ) -> None:
        ort = _import_ort()
        self.manifest = manifest
        self.device = device
        self.precision = manifest.precision
        # int8 keys differ from float32 by ~5%: the CPU readout may multiply bf16-rounded
        # operands (float32 accumulation), ~2x faster with AMX (stmae.readout.cpu_bf16_products)
        self.readout_bf16_products = self.precision == "int8"
        self.export_dir = Path(export_dir)
        self.trt_profile = trt_profile or TrtProfile()
        self.tf32 = bool(tf32)
        self._channels = tuple(int(manifest.graphs[KEY_ENCODER].output(n).shape[1]) for n in ("f16", "f8", "f4"))
        available = ort.get_available_providers()
        if providers is None:
            requested = [(n, {}) for n in default_providers(device, available)]
        else:
            requested = [p if isinstance(p, tuple) else (p, {}) for p in providers]
            missing = [n for n, _ in requested if n not in available]
            if missing:
                raise BackendUnavailable(
                    f"execution provider(s) {missing} are not in this ONNX Runtime build "
                    f"(available: {available}); {_INSTALL}"
                )
            if device.type == "cuda" and not any(n != "CPUExecutionProvider" for n, _ in requested):
                raise BackendUnavailable("device is CUDA but only the CPU provider was asked for")
        # On CUDA every run goes on one non-default stream of this backend (see async_run).
        self._runs = runs if runs is not None else (AsyncRuns(device) if device.type == "cuda" else None)
        stream = self._runs.handle if self._runs is not None else None
        cache = Path(os.environ.get("STMAE_TRT_CACHE", Path.home() / ".cache" / "stmae" / "trt"))
        if device.type == "cuda" and any(n == "TensorrtExecutionProvider" for n, _ in requested):
            cache.mkdir(parents=True, exist_ok=True)
        chosen = {
            graph: [
                (n, {**provider_options(n, device, cache, stream,
                                        self.trt_profile.ort_provider_shapes(graph, self._channels), self.tf32),
                     **user})
                if device.type == "cuda" else (n, user)
                for n, user in requested
            ]
            for graph in (KEY_ENCODER, MASK_AUTOENCODER)
        }
        if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 1):
            raise ValueError(f"intra_op_threads must be a positive integer, got {intra_op_threads!r}")
        self.allow_spinning = device.type != "cpu" if allow_spinning is None else bool(allow_spinning)
        options = session_options(ort, intra_op_threads or available_cpu_cores(), self.allow_spinning)
        self.threads = options.intra_op_num_threads
        self._sessions = {}
        self.provider_options: dict[str, list[tuple[str, dict]]] = {}
        for name in (KEY_ENCODER, MASK_AUTOENCODER):
            self._sessions[name], self.provider_options[name] = self._session(
                ort, self.export_dir / manifest.graphs[name].file, options, chosen[name],
                manifest.onnxruntime_disabled_optimizers,
            )
        self.providers = {name: s.get_providers() for name, s in self._sessions.items()}
        # A run may skip host synchronisation only where every GPU provider of the session
        # computes on this backend's stream (a user's own options may point elsewhere).
        self._on_our_stream = {
            name: stream is not None and all(
                opts.get("user_compute_stream") == str(stream)
                for n, opts in self.provider_options[name] if n in _GPU_PROVIDERS and n in self.providers[name]
            )
            for name in self._sessions
        }
        self._run_options = None
        if any(self._on_our_stream.values()):
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry(NO_SYNC, "1")
        self.layout_warning = layout_warning(manifest, self.providers[MASK_AUTOENCODER][0])
        if self.layout_warning:
            print(f"stmae: warning: {self.layout_warning}", file=sys.stderr, flush=True)
        self._check_io()

    @staticmethod
    def _session(ort, path: Path, options, chosen, disabled: Sequence[str] = ()):
        """(session, the provider list it was created with)."""
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=chosen, disabled_optimizers=list(disabled) or None
            )
            return session, chosen
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
        trt_profile: TrtProfile | None = None,
        tf32: bool = False,
    ) -> "OrtBackend":
        """Open an export folder (manifest checked: contract version and sha256 of both
        graphs) on ``device`` ('cpu' or 'cuda[:i]'). allow_spinning: whether idle intra-op
        threads spin-wait (None: not on the CPU, yes on CUDA); trt_profile: the shapes the
        TensorRT provider builds its engines for; tf32: allow TF32 in the CUDA provider.
        Raises ExportManifestError or BackendUnavailable with a message saying what to do."""
        manifest = load_manifest(export_dir, verify_hashes=True)
        return cls(export_dir, manifest, _resolve_device(device), providers, intra_op_threads, allow_spinning,
                   trt_profile, tf32)

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
        out = self._empty(shape)
        binding.bind_output(name, self.device.type, self.device.index or 0, np.float32, shape, out.data_ptr())
        return out

    def _empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def _run(self, graph: str, inputs: dict[str, torch.Tensor], outputs: dict[str, tuple[int, ...]]):
        session = self._sessions[graph]
        binding = session.io_binding()
        for name, tensor in inputs.items():
            self._bind_input(binding, name, tensor)
        result = {name: self._bind_output(binding, name, shape) for name, shape in outputs.items()}
        if self.device.type != "cuda":
            session.run_with_iobinding(binding)
        elif self._on_our_stream[graph]:
            # Ordered by events with torch's current stream; no host synchronisation.
            self._runs.begin()
            try:
                session.run_with_iobinding(binding, self._run_options)
            finally:
                self._runs.end(list(inputs.values()) + list(result.values()))
        else:  # a provider computes on a stream not ours: synchronise around the run
            torch.cuda.current_stream(self.device).synchronize()
            binding.synchronize_inputs()
            session.run_with_iobinding(binding)
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
