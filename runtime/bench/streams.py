"""``stmae-bench --streams``: the batched engine for S streams against the same S clips run
one after another, by the eager baseline and by sequential sessions, in one run.

Each of S streams plays its own synthetic clip (16:9, same size, its own seed), saved as
JPEG files, masks written as PNGs. Frames are decoded on the CPU (libjpeg through PIL,
:mod:`runtime.engine.gpu_decode`) unless ``--decoder nvjpeg``; every row says which.
Rows per (size, objects, S):

- ``baseline``: :class:`runtime.bench.baseline.EagerBaseline` (published schedule, eager
  fp32, concatenated memory), the S clips one after another;
- ``sessions``: :class:`runtime.engine.session.VideoSession` (the engine with one stream, eager),
  the S clips one after another, per precision;
- ``engine``: :class:`runtime.engine.stream_engine.StreamEngine` stepping the S clips together, eager,
  and (CUDA, ``--cuda-graphs on``) captured per bucket, optionally after torch.compile;
  each as a "network" row (frames already on the device, no output) and "end to end"
  rows (decode and PNG writes included) by the pipelined loop and/or the serial one
  (:mod:`runtime.bench.engine_loops`, ``--pipeline on|off|both``). An end-to-end row's
  host overhead is its ms per stream-frame minus the network row's.

Reported per row: aggregate frames/s (all streams), ms per stream-frame, the frame period
p50/p99 (the time between a stream's consecutive frames), peak GPU (or RSS) memory,
achieved TFLOP/s (counted FLOP x frames/s) next to the matrix-product peak measured in
this run, ratios to the baseline and to sequential sessions, mask mIoU against the
baseline, and the compile/capture time per bucket. The report's ``config`` block records
the decoder, the loops and whether TF32 was allowed (``--allow-tf32``; off by default).
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
from ..backends.torch_backend import cuda_tf32_state, set_cuda_tf32
from ..config import SessionConfig
from ..engine.gpu_decode import DECODERS, check_decoder, decode_cpu, default_workers
from ..engine.session import VideoSession
from ..engine.stream_engine import EngineOptions, StreamEngine
from ..engine.transforms import FrameGeometry
from ..engine.types import _NoTimer
from ..io.gate import check_batch_pixels, check_sizes
from ..io.mask_io import write_mask
from .baseline import EagerBaseline
from .engine_loops import SERIAL_PNG_LEVEL, TAIL, measure_network, measure_pipelined, measure_serial, preload
from .environment import environment_block
from .flops import stage_gflops
from .harness import check_counts, mean_iou
from .memory import PeakMemory
from .peak import measure_peak_gflops
from .stats import LatencyStats, synchronizer
from .streams_report import markdown_rows, write_stream_report
from .suite import _model_and_checkpoint, _write_synthetic

__all__ = ["StreamSuiteSpec", "markdown_rows", "run_stream_suite", "write_stream_report"]

PIPELINES = ("on", "off", "both")


@dataclass(frozen=True)
class StreamSuiteSpec:
    """streams: stream counts S to measure; precisions: torch precisions of the engine
    and session rows; cuda_graphs: also measure the captured engine (CUDA); compile:
    torch.compile before capture; sequential: also run the baseline and sequential
    sessions (the ratios' references); decoder: 'cpu' (default) or 'nvjpeg' (CUDA);
    pipeline: the engine's end-to-end loop, 'on' (pipelined), 'off' (serial) or 'both';
    tf32: allow TF32 in CUDA float32 work (default off: IEEE float32); decode_workers:
    decode and write threads of the pipelined loop (default: usable cores, at most 16);
    repeats: the engine rows (network and end to end) measured this many times,
    interleaved, the median reported."""

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
    decoder: str = "cpu"
    pipeline: str = "both"
    tf32: bool = False
    decode_workers: int | None = None
    repeats: int = 1

    def __post_init__(self) -> None:
        if not self.streams or any(not isinstance(s, int) or s < 1 for s in self.streams):
            raise ValueError(f"--streams takes positive stream counts, got {list(self.streams)}")
        if self.decoder not in DECODERS:
            raise ValueError(f"--decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"--pipeline must be one of {', '.join(PIPELINES)}, got {self.pipeline!r}")
        if self.decode_workers is not None and self.decode_workers < 1:
            raise ValueError(f"--decode-workers must be at least 1, got {self.decode_workers}")
        # Sizes and the stream count are capped before any clip is drawn (runtime.io.gate): a
        # side of at most MAX_SIZE, and the S frames one engine step takes within STMAE_MAX_PIXELS.
        for size in check_sizes("--sizes", self.sizes):
            check_batch_pixels(max(self.streams), size, int(round(size * 16 / 9)),
                               f"--streams {max(self.streams)} at --sizes {size}",
                               "measure fewer streams or a smaller size")
        check_counts(self.frames, self.warmup, self.repeats, tuple(self.sizes), max(self.streams))

    @property
    def loops(self) -> tuple[str, ...]:
        """The end-to-end loops measured, in order."""
        return {"on": ("pipelined",), "off": ("serial",), "both": ("serial", "pipelined")}[self.pipeline]


def _measure_sequential(make_runner, clips, device, warmup, out_dir: Path) -> dict:
    """The clips one after another, each by a fresh runner (rgb, mask) -> labels; frames
    decoded on the CPU like the engine's default."""
    sync = synchronizer(device)
    latency, masks, wall, frames = [], {}, 0.0, 0
    with PeakMemory(device) as peak:
        for s, (paths, first_mask) in enumerate(clips):
            runner = make_runner()
            masks[s] = []
            for t, path in enumerate(paths):
                sync()
                begin = time.perf_counter()
                labels = runner(decode_cpu(path), first_mask if t == 0 else None)
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


def _row(name, kind, precision, streams, objects, geo, m, gflop, peak_tflops, graphs, compiled, *,
         measure="end_to_end", loop="one clip after another", decoder="cpu") -> dict:
    fps = m["stream_frames"] / m["wall_s"]
    lat = LatencyStats.of(m["latency"])
    peak = m["peak"]
    return {
        "name": name, "kind": kind, "precision": precision, "streams": streams, "objects": objects,
        "height": geo.padded_size[0], "width": geo.padded_size[1], "cuda_graphs": graphs, "compiled": compiled,
        "measure": measure, "loop": loop, "decoder": decoder, "decode_timed": measure == "end_to_end",
        "aggregate_fps": fps, "per_stream_fps": fps / streams, "ms_per_stream_frame": 1e3 * m["wall_s"] / m["stream_frames"],
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
    check_decoder(spec.decoder, device)
    set_cuda_tf32(spec.tf32)  # before anything runs, the eager baseline included
    report: dict = {"command": command, "environment": environment_block(), "rows": [],
                    "peak_matmul_tflops": {}}
    with tempfile.TemporaryDirectory(prefix="stmae-bench-streams-") as tmp:
        workdir = Path(tmp)
        model, checkpoint = _model_and_checkpoint(_CheckpointOnly(spec.checkpoint), workdir)
        report["checkpoint"] = spec.checkpoint or "published architecture, contract rule weights"
        model = model.to(device).eval()
        backends = {p: create_backend("torch", checkpoint=checkpoint, device=device, precision=p,
                                      options={"tf32": spec.tf32}) for p in spec.precisions}
        report["config"] = {
            "decoder": spec.decoder, "decode_workers": spec.decode_workers or default_workers(),
            "pipeline": list(spec.loops), "repeats": spec.repeats, "tf32": spec.tf32,
            "cuda_tf32_state": cuda_tf32_state(),
            "loops": {"network": "frames on the device, submit t+1 before wait t, nothing written",
                      "serial": f"decode, check, submit, write the previous PNGs (level {SERIAL_PNG_LEVEL}, "
                                "fsync each), wait",
                      "pipelined": "runtime.io.pipeline.FrameLoop (decode ahead on a pool, submit t+1 before "
                                   "wait t, writer pool, PNG level 1, fsync in groups)"},
            "timing": f"steady state: from frame warmup-1 done to frame frames-1 done, {TAIL} more frames run",
        }
        for precision in sorted({"fp32", *spec.precisions}):
            report["peak_matmul_tflops"][precision] = round(measure_peak_gflops(device, precision) / 1e3, 2)
        for size in spec.sizes:
            for objects in spec.objects:
                for streams in spec.streams:
                    report["rows"] += _measure_point(spec, model, backends, workdir, size, objects, streams,
                                                     device, report["peak_matmul_tflops"], progress)
                    if on_rows is not None:
                        on_rows(report)
    return report


@dataclass(frozen=True)
class _CheckpointOnly:
    checkpoint: str | None


def _clips(spec, workdir: Path, size: int, objects: int, streams: int) -> list:
    clips = []
    for s in range(streams):
        folder = workdir / f"clip_{size}_{objects}_{s}"
        if not folder.is_dir():
            folder.mkdir()
            clips.append(_write_synthetic(folder, spec.frames + TAIL, size, objects, spec.seed + s))
            np.save(folder / "mask0.npy", clips[-1][1])
        else:
            clips.append((sorted(folder.glob("*.jpg")), np.load(folder / "mask0.npy")))
    return clips


def _engine_rows(spec, backend, precision, config, clips, device, out, tag, row, progress) -> list[tuple[dict, dict]]:
    """The network row and the end-to-end rows of each engine variant: [(row, masks)]."""
    variants = [(False, False)]
    if spec.cuda_graphs and device.type == "cuda":
        variants.append((True, spec.compile))
    frames = preload(clips, spec.decoder, device)
    rows = []
    for graphs, compiled in variants:
        label = "graphs" + (" + compile" if compiled else "") if graphs else "eager"
        options = EngineOptions(cuda_graphs=graphs, compile=compiled, channels_last=graphs,
                                lane_round=1, object_round=1, permanent_capacity=1, keep_prob=False)
        engine = StreamEngine(backend, config, options)  # one engine for its rows: one compile and capture
        name = f"engine {precision} {label}"
        kinds = ("network", *spec.loops)
        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for repeat in range(spec.repeats):  # interleaved: a slow spell of the machine hits every kind
            for kind in kinds:
                progress(f"{tag} {name}, {kind} (run {repeat + 1}/{spec.repeats}) ...")
                if kind == "network":
                    m = measure_network(engine, clips, frames, device, spec.warmup)
                elif kind == "serial":
                    m = measure_serial(engine, clips, spec.decoder, device, spec.warmup, out)
                else:
                    m = measure_pipelined(engine, clips, spec.decoder, device, spec.warmup, out, spec.decode_workers)
                runs[kind].append(m)
        chosen = {kind: _median_run(runs[kind]) for kind in kinds}
        network = row(f"{name}, network", chosen["network"], graphs, compiled, measure="network", loop="pipelined",
                      decoder=spec.decoder)
        _add_repeats(network, runs["network"])
        network_masks = chosen["network"]["masks"]
        rows.append((network, network_masks))
        for loop in spec.loops:
            m = chosen[loop]
            e2e = row(f"{name}, end to end ({loop})", m, graphs, compiled, loop=loop, decoder=spec.decoder)
            _add_repeats(e2e, runs[loop])
            e2e["host_overhead_ms_per_stream_frame"] = e2e["ms_per_stream_frame"] - network["ms_per_stream_frame"]
            e2e["masks_equal_network_row"] = all(
                np.array_equal(a, b) for st in m["masks"] for a, b in zip(m["masks"][st], network_masks[st]))
            rows.append((e2e, m["masks"]))
    return rows


def _median_run(runs: list[dict]) -> dict:
    """The repeat with the median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda m: m["wall_s"])[(len(runs) - 1) // 2]


def _add_repeats(row: dict, runs: list[dict]) -> None:
    """ms per stream-frame of every repeat and their spread ((max - min) / median)."""
    ms = [1e3 * m["wall_s"] / m["stream_frames"] for m in runs]
    row["ms_per_stream_frame_runs"] = [float(x) for x in ms]  # unrounded: the spread is computed from them
    row["spread"] = (max(ms) - min(ms)) / row["ms_per_stream_frame"] if len(ms) > 1 else 0.0


def _measure_point(spec, model: STMAE, backends, workdir, size, objects, streams, device, peaks, progress):
    tag = f"[{size}p, {objects} obj, {streams} streams]"
    clips = _clips(spec, workdir, size, objects, streams)  # TAIL frames more for the engine loops
    clip_frames = [(paths[: spec.frames], mask) for paths, mask in clips]  # the sequential rows'
    config = replace(spec.session, size=size)
    geo = FrameGeometry.for_frame(*clips[0][1].shape, size)
    mem_frames = np.mean([min(1 + t // config.mem_every, config.max_memory_frames + 1) for t in range(spec.warmup, spec.frames)])
    counted = stage_gflops(model, *geo.padded_size, objects, memory_frames=1, top_k=config.top_k)
    gflop = counted["key_encoder"] + counted["mask_autoencoder"] + counted["memory_readout"] * mem_frames

    def row(name, m, graphs=False, compiled=False, **how):
        kind = name.split(" ")[0]
        precision = "fp32" if kind == "baseline" else name.split(" ")[1]
        return _row(name, kind, precision, streams, objects, geo, m, gflop, peaks[precision], graphs, compiled, **how)

    rows, base = [], None
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    if spec.sequential:
        progress(f"{tag} baseline (eager fp32, one clip after another) ...")
        base = _measure_sequential(
            lambda: (lambda b: (lambda rgb, mask: b.step(rgb, mask)))(
                EagerBaseline(model, device, size, config.mem_every, config.top_k, _NoTimer())),
            clip_frames, device, spec.warmup, out)
        rows.append((row("baseline (eager fp32, sequential)", base), None))
    for precision, backend in backends.items():
        seq = None
        if spec.sequential:
            progress(f"{tag} sessions {precision} (one clip after another) ...")
            seq = _measure_sequential(
                lambda: (lambda sess: (lambda rgb, mask: sess.step(rgb, mask).labels))(VideoSession(backend, config)),
                clip_frames, device, spec.warmup, out)
            rows.append((row(f"sessions {precision} (sequential)", seq), seq["masks"]))
        for engine_row, masks in _engine_rows(spec, backend, precision, config, clips, device, out, tag, row,
                                          progress):
            if seq is not None:
                engine_row["vs_sequential_sessions"] = engine_row["aggregate_fps"] / (seq["stream_frames"] / seq["wall_s"])
                engine_row["mask_miou_vs_sessions"] = float(np.mean([mean_iou(masks[s], seq["masks"][s]) for s in masks]))
            rows.append((engine_row, masks))
    for r, masks in rows:
        if base is not None:
            r["vs_baseline"] = r["aggregate_fps"] / (base["stream_frames"] / base["wall_s"])
            if masks is not None:
                r["mask_miou_vs_baseline"] = float(np.mean([mean_iou(masks[s], base["masks"][s]) for s in masks]))
    return [r for r, _ in rows]
