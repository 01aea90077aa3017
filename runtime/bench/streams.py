"""``stmae-bench --streams``: the batched engine for S streams against the same S clips run
one after another, by the eager baseline and by sequential sessions, in one run.

Each of S streams plays its own synthetic clip (16:9, same size, its own seed), decoded
from JPEG files (on the GPU in batches where that pays), masks written as PNGs: end to end.
Rows per (size, objects, S):

- ``baseline``: :class:`runtime.bench.baseline.EagerBaseline` (published schedule, eager
  fp32, concatenated memory), the S clips one after another;
- ``sessions``: :class:`runtime.engine.session.VideoSession` (the engine with one stream, eager),
  the S clips one after another, per precision;
- ``engine``: :class:`runtime.engine.stream_engine.StreamEngine` stepping the S clips together, eager,
  and (CUDA, ``--cuda-graphs on``) captured per bucket, optionally after torch.compile.

Reported per row: aggregate frames/s (all streams), per-stream latency p50/p99 (the
wall time a stream waits for its frame), peak GPU (or RSS) memory, achieved TFLOP/s
(counted FLOP x frames/s) next to the matrix-product peak measured in this run, ratios
to the baseline and to sequential sessions, mask mIoU against the baseline, and the
compile/capture time per bucket.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from stmae import STMAE

from ..backends.factory import create_backend
from ..config import SessionConfig
from ..engine.stream_engine import EngineOptions, StreamEngine
from ..engine.types import _NoTimer
from ..engine.gpu_decode import decode_jpegs, gpu_decode_available
from ..io.mask_io import write_mask
from ..engine.session import VideoSession, check_step_input
from ..engine.transforms import FrameGeometry
from .baseline import EagerBaseline
from .environment import environment_block
from .flops import stage_gflops
from .harness import mean_iou, read_rgb
from .memory import PeakMemory
from .peak import measure_peak_gflops
from .stats import LatencyStats, synchronizer
from .suite import _model_and_checkpoint, _write_synthetic


@dataclass(frozen=True)
class StreamSuiteSpec:
    """streams: stream counts S to measure; precisions: torch precisions of the engine
    and session rows; cuda_graphs: also measure the captured engine (CUDA); compile:
    torch.compile before capture; sequential: also run the baseline and sequential
    sessions (the ratios' references)."""

    streams: tuple[int, ...]
    precisions: tuple[str, ...] = ("fp32",)
    cuda_graphs: bool = True
    compile: bool = False
    sequential: bool = True
    sizes: tuple[int, ...] = (480,)
    objects: tuple[int, ...] = (1,)
    frames: int = 20
    warmup: int = 3
    session: SessionConfig = field(default_factory=SessionConfig)
    checkpoint: str | None = None
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.streams or any(not isinstance(s, int) or s < 1 for s in self.streams):
            raise ValueError(f"--streams takes positive stream counts, got {list(self.streams)}")
        if self.frames < 3 or not 1 <= self.warmup <= self.frames - 2:
            raise ValueError(f"need frames >= 3 and warmup in 1..frames-2, got {self.frames}, {self.warmup}")


def _decode(paths: list[Path], device: torch.device, on_gpu: bool):
    if on_gpu:
        return decode_jpegs(paths, device)
    return [read_rgb(p) for p in paths]


def _measure_engine(engine: StreamEngine, clips, device, on_gpu, warmup, out_dir: Path) -> dict:
    """All clips stepped together; the PNGs of frame t are written while frame t+1 runs."""
    sync = synchronizer(device)
    count = len(clips[0][0])
    streams = list(range(len(clips)))
    for s in streams:
        engine.add_stream(s)
    masks = {s: [] for s in streams}
    step_s, pending_prev = [], None
    start_measure = None

    def write(results):
        for s, r in results.items():
            write_mask(out_dir / f"{s}_{r.index:05d}.png", r.labels)
            masks[s].append(r.labels)

    with PeakMemory(device) as peak:
        for t in range(count):
            if t == warmup:
                sync()
                start_measure = time.perf_counter()
            begin = time.perf_counter()
            frames = _decode([clips[s][0][t] for s in streams], device, on_gpu)
            inputs = {s: check_step_input(engine.schedule(s), frames[s], clips[s][1] if t == 0 else None) for s in streams}
            pending = engine.submit(inputs)
            if pending_prev is not None:
                write(pending_prev)
            results = pending.wait()
            step_s.append(time.perf_counter() - begin)
            pending_prev = results
        write(pending_prev)
        sync()
        wall = time.perf_counter() - start_measure
    measured = step_s[warmup:]
    return {"wall_s": wall, "stream_frames": len(streams) * len(measured), "latency": measured,
            "masks": masks, "peak": peak, "graph_reports": list(engine.graph_reports)}


def _measure_sequential(make_runner, clips, device, warmup, out_dir: Path) -> dict:
    """The clips one after another, each by a fresh runner (rgb, mask) -> labels."""
    sync = synchronizer(device)
    latency, masks, wall, frames = [], {}, 0.0, 0
    with PeakMemory(device) as peak:
        for s, (paths, first_mask) in enumerate(clips):
            runner = make_runner()
            masks[s] = []
            for t, path in enumerate(paths):
                sync()
                begin = time.perf_counter()
                labels = runner(read_rgb(path), first_mask if t == 0 else None)
                write_mask(out_dir / f"{s}_{t:05d}.png", labels)
                sync()
                took = time.perf_counter() - begin
                masks[s].append(labels)
                if t >= warmup:
                    latency.append(took)
                    wall += took
                    frames += 1
    return {"wall_s": wall, "stream_frames": frames, "latency": latency, "masks": masks, "peak": peak,
            "graph_reports": []}


def _row(name, kind, precision, streams, objects, geo, m, gflop, peak_tflops, graphs, compiled) -> dict:
    fps = m["stream_frames"] / m["wall_s"]
    lat = LatencyStats.of(m["latency"])
    peak = m["peak"]
    return {
        "name": name, "kind": kind, "precision": precision, "streams": streams, "objects": objects,
        "height": geo.padded_size[0], "width": geo.padded_size[1], "cuda_graphs": graphs, "compiled": compiled,
        "aggregate_fps": fps, "per_stream_fps": fps / streams,
        "latency_ms": {"p50": lat.p50, "p99": lat.p99, "mean": lat.mean},
        "peak_cuda_mb": peak.peak_cuda_mb, "peak_rss_mb": peak.peak_rss_mb,
        "gflop_per_stream_frame": round(gflop, 3),
        "achieved_tflops": gflop * fps / 1e3, "peak_matmul_tflops": peak_tflops,
        "graph_reports": m["graph_reports"],
    }


def run_stream_suite(spec: StreamSuiteSpec, command: str, progress=print, on_rows=None) -> dict:
    """Measure every configuration; returns the report dict (``rows``). on_rows(report)
    is called after each (size, objects, streams) point (e.g. to save partial results)."""
    device = torch.device(spec.device)
    on_gpu = gpu_decode_available(device)
    report: dict = {"command": command, "environment": environment_block(), "rows": [],
                    "gpu_decode": on_gpu, "peak_matmul_tflops": {}}
    for precision in sorted({"fp32", *spec.precisions}):
        report["peak_matmul_tflops"][precision] = round(measure_peak_gflops(device, precision) / 1e3, 2)
    with tempfile.TemporaryDirectory(prefix="stmae-bench-streams-") as tmp:
        workdir = Path(tmp)
        model, checkpoint = _model_and_checkpoint(_CheckpointOnly(spec.checkpoint), workdir)
        report["checkpoint"] = spec.checkpoint or "published architecture, contract rule weights"
        model = model.to(device).eval()
        backends = {p: create_backend("torch", checkpoint=checkpoint, device=device, precision=p) for p in spec.precisions}
        for size in spec.sizes:
            for objects in spec.objects:
                for streams in spec.streams:
                    report["rows"] += _measure_point(spec, model, backends, workdir, size, objects, streams,
                                                     device, on_gpu, report["peak_matmul_tflops"], progress)
                    if on_rows is not None:
                        on_rows(report)
    return report


@dataclass(frozen=True)
class _CheckpointOnly:
    checkpoint: str | None


def _measure_point(spec, model: STMAE, backends, workdir, size, objects, streams, device, on_gpu, peaks, progress):
    tag = f"[{size}p, {objects} obj, {streams} streams]"
    clips = []
    for s in range(streams):
        folder = workdir / f"clip_{size}_{objects}_{s}"
        if not folder.is_dir():
            folder.mkdir()
            clips.append(_write_synthetic(folder, spec.frames, size, objects, spec.seed + s))
        else:
            paths = sorted(folder.glob("*.jpg"))
            clips.append((paths, _first_mask(folder)))
        np.save(folder / "mask0.npy", clips[-1][1])
    config = replace(spec.session, size=size)
    geo = FrameGeometry.for_frame(*clips[0][1].shape, size)
    mem_frames = np.mean([min(1 + t // config.mem_every, config.max_memory_frames + 1) for t in range(spec.warmup, spec.frames)])
    counted = stage_gflops(model, *geo.padded_size, objects, memory_frames=1, top_k=config.top_k)
    gflop = counted["key_encoder"] + counted["mask_autoencoder"] + counted["memory_readout"] * mem_frames
    rows, base = [], None
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    if spec.sequential:
        progress(f"{tag} baseline (eager fp32, one clip after another) ...")
        m = _measure_sequential(
            lambda: (lambda b: (lambda rgb, mask: b.step(rgb, mask)))(
                EagerBaseline(model, device, size, config.mem_every, config.top_k, _NoTimer())),
            clips, device, spec.warmup, out)
        base = m
        rows.append(_row("baseline (eager fp32, sequential)", "baseline", "fp32", streams, objects, geo, m, gflop,
                         peaks["fp32"], False, False))
    for precision, backend in backends.items():
        seq = None
        if spec.sequential:
            progress(f"{tag} sessions {precision} (one clip after another) ...")
            seq = _measure_sequential(
                lambda: (lambda sess: (lambda rgb, mask: sess.step(rgb, mask).labels))(VideoSession(backend, config)),
                clips, device, spec.warmup, out)
            rows.append(_row(f"sessions {precision} (sequential)", "sessions", precision, streams, objects, geo, seq,
                             gflop, peaks[precision], False, False))
        variants = [(False, False)]
        if spec.cuda_graphs and device.type == "cuda":
            variants.append((True, spec.compile))
        for graphs, compiled in variants:
            label = "graphs" + (" + compile" if compiled else "") if graphs else "eager"
            progress(f"{tag} engine {precision} {label} ...")
            options = EngineOptions(cuda_graphs=graphs, compile=compiled, channels_last=graphs,
                                    lane_round=1, object_round=1, permanent_capacity=1, keep_prob=False)
            engine = StreamEngine(backend, config, options)
            m = _measure_engine(engine, clips, device, on_gpu, spec.warmup, out)
            row = _row(f"engine {precision} {label}", "engine", precision, streams, objects, geo, m, gflop,
                       peaks[precision], graphs, compiled)
            if seq is not None:
                row["vs_sequential_sessions"] = row["aggregate_fps"] / (seq["stream_frames"] / seq["wall_s"])
                row["mask_miou_vs_sessions"] = float(np.mean([mean_iou(m["masks"][s], seq["masks"][s]) for s in m["masks"]]))
            rows.append(row)
            rows[-1]["_masks"] = m["masks"]
        if seq is not None:
            rows[-len(variants) - 1]["_masks"] = seq["masks"]
    for row in rows:
        masks = row.pop("_masks", None)
        if base is not None:
            row["vs_baseline"] = row["aggregate_fps"] / (base["stream_frames"] / base["wall_s"])
            if masks is not None:
                row["mask_miou_vs_baseline"] = float(np.mean([mean_iou(masks[s], base["masks"][s]) for s in masks]))
    return rows


def _first_mask(folder: Path) -> np.ndarray:
    return np.load(folder / "mask0.npy")


def markdown_rows(report: dict) -> str:
    """One line per row: aggregate frames/s, latency, memory, TFLOP/s, ratios."""
    head = ["configuration", "streams", "objects", "size", "frames/s (all streams)", "per-stream p50 ms",
            "p99 ms", "peak MB", "TFLOP/s (peak)", "vs baseline", "vs sequential sessions", "mIoU vs baseline",
            "compile+capture s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        mem = r["peak_cuda_mb"] if r["peak_cuda_mb"] is not None else r["peak_rss_mb"]
        graph = [g for g in r["graph_reports"] if g.get("fallback") is None]
        fallback = [g["fallback"] for g in r["graph_reports"] if g.get("fallback")]
        compile_s = ", ".join(f"{g['compile_and_warmup_s'] + g['capture_s']:.1f}" for g in graph) or (
            fallback[0] if fallback else "-")
        fmt = lambda key, spec: "-" if r.get(key) is None else format(r[key], spec)  # noqa: E731
        lines.append("| " + " | ".join([
            r["name"], str(r["streams"]), str(r["objects"]), f"{r['height']}x{r['width']}",
            f"{r['aggregate_fps']:.2f}", f"{r['latency_ms']['p50']:.1f}", f"{r['latency_ms']['p99']:.1f}",
            f"{mem:.0f}", f"{r['achieved_tflops']:.3f} ({r['peak_matmul_tflops']:.1f})",
            fmt("vs_baseline", ".2f") + ("x" if r.get("vs_baseline") else ""),
            fmt("vs_sequential_sessions", ".2f") + ("x" if r.get("vs_sequential_sessions") else ""),
            fmt("mask_miou_vs_baseline", ".4f"), compile_s,
        ]) + " |")
    return "\n".join(lines) + "\n"


def write_stream_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """report.json and report.md (atomic writes) in ``out_dir``."""
    import json

    from .report import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    env = report["environment"]
    gpu = env["gpu"]["name"] if env.get("gpu") else "none"
    md = ["# stmae-bench --streams report", "", f"Command: `{report['command']}`", "",
          f"Machine: {env['cpu_model']}, {env['usable_cores']} usable cores; GPU: {gpu}; "
          f"GPU JPEG decode: {report['gpu_decode']}; matmul peak TFLOP/s {report['peak_matmul_tflops']}", "",
          markdown_rows(report)]
    atomic_write_text(paths["markdown"], "\n".join(md))
    return paths
