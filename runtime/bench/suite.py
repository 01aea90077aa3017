"""A benchmark suite: the eager baseline and each configuration over the same clip, for
every (size, objects) combination asked for, into one report dict."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from stmae import STMAE, generate_clip, load_checkpoint, preset, save_checkpoint
from stmae.reference_weights import reference_weights_for

from ..backends.factory import create_backend
from ..backends.torch_backend import cuda_tf32_state, set_cuda_tf32
from ..config import SessionConfig
from ..io.frames import FrameFolder
from ..io.mask_io import read_mask
from ..engine.session import VideoSession
from ..engine.transforms import FrameGeometry
from .baseline import EagerBaseline
from .environment import environment_block
from .flops import stage_gflops
from .harness import ClipMeasurement, ClipSettings, RunSpec, check_counts, drift_ratio, mean_iou, measure_clip
from .peak import measure_peak_gflops


@dataclass(frozen=True)
class SuiteSpec:
    """checkpoint: a checkpoint file, or None for the published architecture with the
    contract's deterministic weights; input_dir + mask: real frames and the first mask, or
    None for a synthetic clip (16:9, ``objects`` objects); sizes / objects: the sweep."""

    runs: tuple[RunSpec, ...]
    clip: ClipSettings
    sizes: tuple[int, ...] = (480,)
    objects: tuple[int, ...] = (1,)
    checkpoint: str | None = None
    input_dir: str | None = None
    mask: str | None = None
    device: str = "cpu"
    seed: int = 0
    repeats: int = 1
    tf32: bool = False  # allow TF32 in CUDA float32 work (--allow-tf32; default IEEE float32)

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("give at least one configuration to compare with the baseline")
        if (self.input_dir is None) != (self.mask is None):
            raise ValueError("--input and --mask go together (real frames need their first mask)")
        if self.input_dir is not None and self.objects != (1,) and len(self.objects) > 1:
            raise ValueError("an object-count sweep needs the synthetic clip (real frames have their own objects)")
        for size in self.sizes:  # checked before any synthetic clip is drawn at that size
            try:
                replace(self.clip.session, size=size)
            except ValueError as exc:
                raise ValueError(f"--sizes: {exc}") from None
        if any(not 1 <= n <= 254 for n in self.objects):
            raise ValueError(f"--objects must be in 1..254, got {list(self.objects)}")
        check_counts(self.clip.frames, self.clip.warmup, self.repeats,
                     self.sizes if self.input_dir is None else ())


class _SessionAdapter:
    def __init__(self, backend, config: SessionConfig, timer) -> None:
        self.session = VideoSession(backend, config, timer=timer)

    def step(self, rgb, mask):
        return self.session.step(rgb, mask).labels


def _write_synthetic(folder: Path, frames: int, size: int, objects: int, seed: int) -> tuple[list[Path], np.ndarray]:
    height = size
    width = int(round(size * 16 / 9))
    clip = generate_clip(frames=frames, height=height, width=width, objects=objects, seed=seed)
    paths = []
    for i, rgb in enumerate(clip.frames):
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    return paths, clip.masks[0]


def _model_and_checkpoint(spec: SuiteSpec, workdir: Path) -> tuple[STMAE, str]:
    if spec.checkpoint is not None:
        return load_checkpoint(spec.checkpoint).model, spec.checkpoint
    model = STMAE(preset("published"))
    model.load_state_dict(reference_weights_for(model))
    path = workdir / "published_rule_weights.pth"
    save_checkpoint(path, model)
    return model.eval(), str(path)


def backend_settings(backend) -> dict:
    """What a report needs to reproduce a configuration: the backend's device and
    precision, and for ONNX Runtime its providers, threads, spinning and the graph
    transformers switched off (from the export's manifest)."""
    settings = {"device": str(getattr(backend, "device", "")), "precision": getattr(backend, "precision", None)}
    settings["tf32"] = getattr(backend, "tf32", None)
    if getattr(backend, "name", "") == "torch":
        settings["torch_threads"] = torch.get_num_threads()
    if getattr(backend, "name", "") == "onnxruntime":
        settings.update(
            providers=getattr(backend, "providers", None),
            intra_op_threads=getattr(backend, "threads", None),
            allow_spinning=getattr(backend, "allow_spinning", None),
            disabled_optimizers=list(backend.manifest.onnxruntime_disabled_optimizers),
            key_encoder_float32=backend.manifest.precision_details.get("key_encoder_float32"),
            int8_tool=backend.manifest.precision_details.get("mask_autoencoder", {}).get("tool"),
        )
    return settings


def _run_name(run: RunSpec, backend) -> str:
    name = f"{run.backend} {getattr(backend, 'precision', run.precision)}"
    return name if run.export_dir is None else f"{name} ({Path(run.export_dir).name})"


def run_suite(spec: SuiteSpec, command: str, progress=print) -> dict:
    """Measure everything; returns the report dict (see report.write_report)."""
    device = torch.device(spec.device)
    set_cuda_tf32(spec.tf32)  # the eager baseline follows the same rule as the backends
    report: dict = {"command": command, "environment": environment_block(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="stmae-bench-") as tmp:
        workdir = Path(tmp)
        model, checkpoint = _model_and_checkpoint(spec, workdir)
        model = model.to(device).eval()
        backends = []
        for run in spec.runs:
            backend = create_backend(run.backend, checkpoint=checkpoint, export_dir=run.export_dir, device=device,
                                     precision=run.precision or "fp32", options={"tf32": spec.tf32})
            backends.append((run, backend))
        report["config"] = {"tf32": spec.tf32, "cuda_tf32_state": cuda_tf32_state()}
        report["checkpoint"] = spec.checkpoint or "published architecture, contract rule weights"
        report["peak_gflops"] = {
            p: round(measure_peak_gflops(device, p), 1) for p in ("fp32", "bf16", "int8")
        }
        for size in spec.sizes:
            for objects in spec.objects:
                clipdir = workdir / f"clip_{size}_{objects}"
                clipdir.mkdir()
                if spec.input_dir is None:
                    frames, first_mask = _write_synthetic(clipdir, spec.clip.frames, size, objects, spec.seed)
                else:
                    folder = FrameFolder(spec.input_dir)
                    frames = folder.paths[: spec.clip.frames]
                    first_mask = read_mask(spec.mask)[0]
                    if len(frames) < spec.clip.frames:
                        raise ValueError(f"{spec.input_dir} has {len(frames)} frames, fewer than --frames {spec.clip.frames}")
                n_obj = int(len(np.unique(first_mask)) - 1)
                session_cfg = replace(spec.clip.session, size=size)
                clip = replace(spec.clip, session=session_cfg)
                geo = FrameGeometry.for_frame(*first_mask.shape, size)
                baseline_settings = {"device": str(device), "precision": "fp32", "torch_threads": torch.get_num_threads()}
                makers = [("baseline (eager fp32, concat memory)", "torch", "fp32", baseline_settings,
                           lambda timer: EagerBaseline(model, device, size, session_cfg.mem_every, session_cfg.top_k, timer))]
                for run, backend in backends:
                    makers.append((_run_name(run, backend), run.backend, getattr(backend, "precision", run.precision),
                                   backend_settings(backend),
                                   lambda timer, b=backend: _SessionAdapter(b, session_cfg, timer)))
                # Repeats are interleaved (baseline, configs, baseline, configs, ...) so that
                # a slow spell of a busy machine spreads over all of them.
                measured: list[list[ClipMeasurement]] = [[] for _ in makers]
                for repeat in range(spec.repeats):
                    for k, (name, _b, _p, _s, make) in enumerate(makers):
                        progress(f"[{size}p, {n_obj} object(s)] {name} (run {repeat + 1}/{spec.repeats}) ...")
                        measured[k].append(measure_clip(make, frames, first_mask, clip, device, workdir / f"out_{k}"))
                base_runs = measured[0]
                base = _median_run(base_runs)
                gflops = stage_gflops(model, *geo.padded_size, n_obj, memory_frames=1, top_k=session_cfg.top_k)
                # The runtime's working window is full from this frame on (frame 0 annotated).
                window_full = session_cfg.mem_every * session_cfg.max_memory_frames + 1
                for (name, backend_name, precision, used, _make), runs in zip(makers, measured):
                    m = _median_run(runs)
                    row = _row(name, backend_name, precision, m, base, gflops, geo, n_obj, len(frames))
                    row.update(_repeat_stats(runs, base_runs, is_baseline=runs is base_runs))
                    row["backend_settings"] = used
                    row["drift_last100_after_window_full"] = drift_ratio(m.per_frame_ms, start=window_full)
                    row["window_full_from_frame"] = window_full
                    report["runs"].append(row)
    report["repeats"] = spec.repeats
    report["warnings"] = [row["spread_warning"] for row in report["runs"] if row.get("spread_warning")]
    return report


def _median_run(runs: list[ClipMeasurement]) -> ClipMeasurement:
    """The repeat with the median frames/s (its stages and masks are reported)."""
    return sorted(runs, key=lambda m: m.fps)[(len(runs) - 1) // 2]


def _repeat_stats(runs: list[ClipMeasurement], base_runs: list[ClipMeasurement], is_baseline: bool) -> dict:
    """frames/s of every repeat, min and median; the spread (max - min) / median of this
    configuration and of the baseline; a warning when the larger spread exceeds the
    difference from the baseline that the report shows (|median ratio - 1|)."""
    fps = [m.fps for m in runs]
    base_fps = [m.fps for m in base_runs]
    # The median run (the lower one of an even count), the one whose stages are reported.
    median, base_median = sorted(fps)[(len(fps) - 1) // 2], sorted(base_fps)[(len(base_fps) - 1) // 2]

    def spread(values: list[float]) -> float:
        return (max(values) - min(values)) / sorted(values)[(len(values) - 1) // 2] if len(values) > 1 else 0.0

    out = {"fps_runs": [round(f, 4) for f in fps], "fps_min": min(fps), "fps_median": median,
           "speedup_vs_baseline": median / base_median, "spread": spread(fps), "baseline_spread": spread(base_fps)}
    difference = abs(out["speedup_vs_baseline"] - 1.0)
    noise = max(out["spread"], out["baseline_spread"])
    if not is_baseline and len(fps) > 1 and noise > difference:
        out["spread_warning"] = (
            f"the spread between repeated runs ({noise:.0%}) exceeds the {difference:.0%} difference from the "
            f"baseline that is reported ({out['speedup_vs_baseline']:.2f}x): lengthen --frames, add --repeats, "
            f"or run on a quieter machine"
        )
    elif not is_baseline and len(fps) == 1:
        out["spread_warning"] = "one run only (--repeats 1): no spread measured, the ratio may be noise"
    return out


def _row(name, backend, precision, m: ClipMeasurement, base: ClipMeasurement, gflops, geo, objects, frames) -> dict:
    work = {
        "key_encoder": gflops["key_encoder"],
        "memory_readout": gflops["memory_readout"] * m.memory_frames_mean,
        "mask_autoencoder": gflops["mask_autoencoder"],
    }
    achieved = {
        stage: round(work[stage] / (m.stages[stage]["p50"] / 1e3), 2)
        for stage in work if stage in m.stages and m.stages[stage]["p50"] > 0
    }
    return {
        "name": name,
        "backend": backend,
        "precision": precision,
        "objects": objects,
        "frames": frames,
        "height": geo.padded_size[0],
        "width": geo.padded_size[1],
        "input_size": list(geo.input_size),
        "fps": m.fps,
        "fps_x_objects": m.fps * objects,
        "speedup_vs_baseline": m.fps / base.fps,
        "mask_miou_vs_reference": None if m is base else mean_iou(m.masks, base.masks),
        "frame_ms": m.frame_ms,
        "stages": m.stages,
        "gflop_per_frame": {k: round(v, 3) for k, v in work.items()},
        "achieved_gflops": achieved,
        "peak_memory_mb": m.peak_cuda_mb if m.peak_cuda_mb is not None else m.peak_rss_mb,
        "peak_rss_mb": m.peak_rss_mb,
        "peak_cuda_mb": m.peak_cuda_mb,
        "drift_last100_over_first100": drift_ratio(m.per_frame_ms),
        "per_frame_ms": [round(x, 3) for x in m.per_frame_ms],
    }
