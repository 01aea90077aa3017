"""Where one engine step's time goes, in steady state (``benchmarks/gpu_profile.py``).

S streams play a synthetic clip (16:9, saved as JPEG files). The engine (CUDA graphs and
optionally torch.compile; on the CPU the same static program, run eagerly) is stepped
until every stream's memory holds ``1 + max_memory_frames`` frames (the window is full),
then three measurements:

- :func:`stage_times`: device time of each stage of the captured step, on the bucket's
  own static tensors: preprocess, key encoder, readout, mask autoencoder with
  aggregation, finish (memory write to the scratch slot, restore, label map). On CUDA
  each stage is captured in its own CUDA graph and its replays timed with CUDA events;
  the whole captured step (the engine's graph) likewise. On the CPU: ``perf_counter``
  around eager runs. Medians of ``repeats``.
- :func:`host_times`: host time per frame by stage, a serial loop over frames decoded
  from the JPEG files: decode (libjpeg through PIL), check, submit, wait, write (PNG at
  the loop's level 1, into a group commit) and sync (the group's fsyncs, amortized). On
  the CPU submit runs the step itself and wait is empty.
- :func:`kernel_table`: ``torch.profiler`` over ``profile_steps`` replays of the captured
  step: the costliest CUDA kernels (on the CPU: the costliest operators).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stmae.atomic import GroupCommit

from ..config import SessionConfig
from ..engine.gpu_decode import decode_cpu
from ..engine.session import check_step_input
from ..engine.stream_engine import EngineOptions, StreamEngine
from ..io.mask_io import DEFAULT_PNG_LEVEL, write_mask
from .stats import synchronizer
from .suite import _write_synthetic

STAGES = ("preprocess", "key_encoder", "readout", "mask_autoencoder", "finish")
HOST_STAGES = ("decode", "check", "submit", "wait", "write", "sync")


@dataclass(frozen=True)
class ProfileSpec:
    """streams: S; size: shorter side of the 16:9 clip; compile: torch.compile before
    capture (CUDA); mem_every / max_memory_frames: the schedule (the warm-up steps
    ``mem_every * max_memory_frames + 1`` frames, which fills the window); repeats: timed
    runs per stage; host_frames: frames of the host loop; profile_steps: steps profiled;
    top: kernels listed."""

    streams: int
    size: int = 480
    objects: int = 1
    compile: bool = True
    mem_every: int = 5
    max_memory_frames: int = 20
    repeats: int = 20
    host_frames: int = 8
    profile_steps: int = 5
    top: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("streams", "size", "objects", "mem_every", "max_memory_frames", "repeats", "host_frames",
                     "profile_steps", "top"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def warmup_frames(self) -> int:
        return self.mem_every * self.max_memory_frames + 1


class SteadyEngine:
    """An engine stepped to steady state; ``bucket`` is its one bucket, ``frames`` the
    clip's decoded frames ((H, W, 3) uint8), ``paths`` their JPEG files."""

    def __init__(self, backend, spec: ProfileSpec, workdir: Path) -> None:
        self.spec, self.device = spec, torch.device(backend.device)
        cuda = self.device.type == "cuda"
        self.paths, self.first_mask = _write_synthetic(workdir, 8, spec.size, spec.objects, spec.seed)
        self.frames = [decode_cpu(p) for p in self.paths]
        config = SessionConfig(mem_every=spec.mem_every, max_memory_frames=spec.max_memory_frames, size=spec.size)
        options = EngineOptions(cuda_graphs=True, compile=spec.compile and cuda, channels_last=cuda,
                                lane_round=1, object_round=1, permanent_capacity=1, keep_prob=False)
        self.engine = StreamEngine(backend, config, options)
        self.streams = [self.engine.add_stream(s) for s in range(spec.streams)]
        self.t = 0
        start = time.perf_counter()
        for _ in range(spec.warmup_frames):
            self.step(self.frames)
        synchronizer(self.device)()
        self.warmup_s = time.perf_counter() - start
        (self.bucket,) = self.engine._buckets.values()
        self.memory_frames = min(self.engine.memory(s).used for s in self.streams)

    def frame(self, k: int | None = None):
        return self.frames[(self.t if k is None else k) % len(self.frames)]

    def inputs(self, frames) -> dict:
        mask = self.first_mask if self.t == 0 else None
        return {s: check_step_input(self.engine.schedule(s), frames[self.t % len(frames)], mask) for s in self.streams}

    def step(self, frames) -> dict:
        results = self.engine.submit(self.inputs(frames)).wait()
        self.t += 1
        return results


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median milliseconds of ``repeats`` calls after ``warmup`` calls: CUDA events on
    CUDA, else perf_counter."""
    for _ in range(warmup):
        fn()
    sync = synchronizer(device)
    sync()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(samples)


def _captured(fn: Callable[[], object], device: torch.device):
    """(a replay callable, the static output) of ``fn`` captured in a CUDA graph; on the
    CPU (fn, its output)."""
    if device.type != "cuda":
        return fn, fn()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    torch.cuda.synchronize(device)
    return graph.replay, out


def _whole_step(steady: SteadyEngine):
    """The captured step as the engine replays it (writes go to the scratch slot)."""
    bucket, device = steady.bucket, steady.device
    state, step = bucket.state, bucket.step
    if device.type == "cuda" and bucket.graph is not None:
        bucket.graph.write_slot.fill_(state.slots)
        bucket.graph.write_frame.fill_(-1)
        return bucket.graph.graph.replay
    frames = _static_frames(steady)
    slot = torch.full((state.lanes,), state.slots, dtype=torch.int64, device=device)
    index = torch.full((state.lanes,), -1, dtype=torch.int64, device=device)
    return lambda: step.static_step(state, frames, slot, index)


def _static_frames(steady: SteadyEngine) -> torch.Tensor:
    lanes = steady.bucket.state.lanes
    return torch.as_tensor(np.stack([steady.frame(k) for k in range(lanes)])).to(steady.device)


@torch.inference_mode()
def stage_times(steady: SteadyEngine) -> dict:
    """Median ms per stage of one step of all S lanes, the whole captured step, and the
    stages' sum."""
    bucket, device, repeats = steady.bucket, steady.device, steady.spec.repeats
    state, step = bucket.state, bucket.step
    network = step.backend
    frames = _static_frames(steady)
    slot = torch.full((state.lanes,), state.slots, dtype=torch.int64, device=device)
    index = torch.full((state.lanes,), -1, dtype=torch.int64, device=device)
    run = {}
    run["preprocess"], image = _captured(lambda: step.preprocess(frames), device)
    run["key_encoder"], features = _captured(lambda: network.encode_key(image), device)
    run["readout"], coarse = _captured(lambda: step.read(state, features.f16, None, False), device)
    run["mask_autoencoder"], prob = _captured(
        lambda: step.segment(state, image, features, coarse, list(range(state.lanes))), device)

    def finish():
        step.write(state, features.f16, prob, slot, index)
        return step.finish(state, prob)

    run["finish"], _ = _captured(finish, device)
    times = {name: median_ms(run[name], repeats, device) for name in STAGES}
    whole = median_ms(_whole_step(steady), repeats, device)
    return {"ms": times, "captured_step_ms": whole, "sum_of_stages_ms": sum(times.values()),
            "timer": "CUDA events around CUDA graph replays" if device.type == "cuda" else
            "perf_counter around eager runs (no GPU: no CUDA events)"}


def host_times(steady: SteadyEngine, out_dir: Path) -> dict:
    """Median host ms per step and per stream-frame of each host stage, a serial loop
    (sync: the group commit's time over the loop, per step)."""
    device, spec = steady.device, steady.spec
    sync = synchronizer(device)
    group = GroupCommit()
    samples: dict[str, list[float]] = {name: [] for name in HOST_STAGES[:-1]}
    for _ in range(spec.host_frames):
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            samples[name].append((now - clock) * 1e3)
            clock = now

        path = steady.paths[steady.t % len(steady.paths)]
        frames = [decode_cpu(path) for _ in steady.streams]
        lap("decode")
        inputs = {s: check_step_input(steady.engine.schedule(s), frames[i]) for i, s in enumerate(steady.streams)}
        lap("check")
        pending = steady.engine.submit(inputs)
        lap("submit")
        results = pending.wait()
        sync()
        lap("wait")
        for s, r in results.items():
            write_mask(out_dir / f"{s}_{r.index:05d}.png", r.labels, level=DEFAULT_PNG_LEVEL, group=group)
        lap("write")
        steady.t += 1
    begin = time.perf_counter()
    group.commit()
    per_step = {name: statistics.median(v) for name, v in samples.items()}
    per_step["sync"] = (time.perf_counter() - begin) * 1e3 / spec.host_frames
    return {"ms_per_step": per_step, "ms_per_stream_frame": {k: v / spec.streams for k, v in per_step.items()},
            "frames": spec.host_frames}


def _device_time(evt) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(evt, attr):
            return float(getattr(evt, attr))
    return 0.0


@torch.inference_mode()
def kernel_table(steady: SteadyEngine) -> dict:
    """The ``top`` costliest CUDA kernels over ``profile_steps`` replays of the captured
    step (if the profiler sees no kernel inside graph replays: eager runs of the same
    static step); on the CPU the costliest operators. Times are per step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    device, spec = steady.device, steady.spec
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = synchronizer(device)
    source = "graph replays"
    rows = []
    for fn, source in ((_whole_step(steady), "captured step (graph replays)" if cuda else "static step, eager (CPU)"),
                       (_eager_static(steady), "static step run eagerly (the same kernels)")):
        fn()
        sync()
        with profile(activities=activities) as prof:
            for _ in range(spec.profile_steps):
                fn()
            sync()
        events = prof.key_averages()
        if cuda:
            picked = [(e.key, e.count, _device_time(e)) for e in events if e.device_type == DeviceType.CUDA]
        else:
            picked = [(e.key, e.count, float(e.self_cpu_time_total)) for e in events]
        rows = [r for r in picked if r[2] > 0]
        if rows or not cuda:
            break
    total = sum(r[2] for r in rows) or 1.0
    rows.sort(key=lambda r: r[2], reverse=True)
    steps = spec.profile_steps
    table = [{"name": name, "calls_per_step": count / steps, "ms_per_step": us / steps / 1e3,
              "share": us / total} for name, count, us in rows[: spec.top]]
    return {"source": source, "what": "CUDA kernels" if cuda else "CPU operators (no GPU: no kernels)",
            "total_ms_per_step": total / steps / 1e3, "rows": table}


def _eager_static(steady: SteadyEngine):
    state, step, device = steady.bucket.state, steady.bucket.step, steady.device
    frames = _static_frames(steady)
    slot = torch.full((state.lanes,), state.slots, dtype=torch.int64, device=device)
    index = torch.full((state.lanes,), -1, dtype=torch.int64, device=device)
    return lambda: step.static_step(state, frames, slot, index)


def profile_streams(backend, spec: ProfileSpec, progress=print) -> dict:
    """Every measurement for one stream count."""
    with tempfile.TemporaryDirectory(prefix="stmae-profile-") as tmp:
        workdir = Path(tmp)
        (workdir / "clip").mkdir()
        (workdir / "out").mkdir()
        progress(f"[{spec.streams} streams] warm-up: {spec.warmup_frames} frames (memory window full) ...")
        steady = SteadyEngine(backend, spec, workdir / "clip")
        progress(f"[{spec.streams} streams] stages ...")
        stages = stage_times(steady)
        progress(f"[{spec.streams} streams] host loop ...")
        host = host_times(steady, workdir / "out")
        progress(f"[{spec.streams} streams] profiler ...")
        kernels = kernel_table(steady)
        state = steady.bucket.state
        return {"streams": spec.streams, "height": steady.frames[0].shape[0], "width": steady.frames[0].shape[1],
                "padded": list(steady.bucket.step.geometry.padded_size), "objects": spec.objects,
                "memory_frames": steady.memory_frames, "memory_slots": state.slots,
                "warmup_frames": spec.warmup_frames, "warmup_s": steady.warmup_s,
                "graph_reports": list(steady.engine.graph_reports),
                "stages": stages, "host": host, "kernels": kernels}
