"""The engine rows of ``stmae-bench --streams``: S clips stepped together by one
:class:`runtime.engine.stream_engine.StreamEngine`, measured three ways.

- :func:`measure_network`: the frames already on the device as uint8 tensors, nothing
  written; ``submit(t+1)`` is queued before ``wait(t)``. The engine on its own.
- :func:`measure_serial` (``--pipeline off``, the loop before issue 21): per frame, decode
  the S files on this thread, check, submit, write the previous frame's PNGs (zlib level
  6, PIL's default, one fsync per mask), then wait.
- :func:`measure_pipelined`: the product's loop, :class:`runtime.io.pipeline.FrameLoop`
  (what ``stmae-segment``, ``stmae-eval`` and corpus runs use): frames decoded ahead on a
  thread pool, ``submit(t+1)`` before ``wait(t)``, PNGs (level 1) written by a writer
  pool, fsync in groups.

Timing is steady state: every loop runs the clip's ``frames`` frames and :data:`TAIL`
more, and the measured wall time runs from the moment frame ``warmup - 1`` is done (its
label maps on the host, for every stream) to the moment frame ``frames - 1`` is; so the
frames decoded ahead, the step in flight and the writes pending are alike at both ends,
and each measured frame's work is counted once. Each returns a dict: wall_s,
stream_frames, latency (seconds between a stream's consecutive frames, the measured
ones), masks {stream: [labels (H, W) uint8]} (the clip's frames), peak
(:class:`PeakMemory`), graph_reports.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..engine.gpu_decode import decode_cpu, decode_jpegs, default_workers, frames_for
from ..engine.session import check_step_input
from ..engine.stream_engine import StreamEngine
from ..io.frames import FrameFolder
from ..io.mask_io import write_mask
from ..io.pipeline import FrameLoop, LoopVideo, PipelineOptions
from .memory import PeakMemory

Clip = tuple[list[Path], np.ndarray]  # (frame files, first mask (H, W) uint8)
TAIL = 2  # frames run after the measured ones: as many as the pipelined loop decodes ahead
SERIAL_PNG_LEVEL = 6  # what the toolkit wrote before the pipelined loop (PIL's default)


def decode_batch(paths: list[Path], decoder: str, device: torch.device) -> list:
    """Decode one frame per stream on this thread (the serial loop)."""
    if decoder == "nvjpeg":
        return decode_jpegs(paths, device)
    return [decode_cpu(p) for p in paths]


def preload(clips: list[Clip], decoder: str, device: torch.device) -> list[list[torch.Tensor]]:
    """Every frame of every clip decoded and put on ``device``: [t][stream] (H, W, 3) uint8."""
    count = len(clips[0][0])
    return [[torch.as_tensor(f).to(device) for f in decode_batch([c[0][t] for c in clips], decoder, device)]
            for t in range(count)]


class _Clock:
    """When each frame was done for every stream; the masks of the clip's frames."""

    def __init__(self, streams: int, frames: int, warmup: int) -> None:
        self.streams, self.frames, self.warmup = streams, frames, warmup
        self.done: dict[int, float] = {}
        self.masks: dict[int, list[np.ndarray]] = {s: [] for s in range(streams)}
        self._seen: Counter = Counter()

    def result(self, stream: int, index: int, labels: np.ndarray) -> None:
        if index < self.frames:
            self.masks[stream].append(labels)
        self._seen[index] += 1
        if self._seen[index] == self.streams:  # its label maps are on the host: the step is over
            self.done[index] = time.perf_counter()

    def report(self, peak: PeakMemory, engine: StreamEngine) -> dict:
        times = [self.done[t] for t in range(self.warmup - 1, self.frames)]
        return {"wall_s": times[-1] - times[0], "stream_frames": self.streams * (self.frames - self.warmup),
                "latency": list(np.diff(times)), "masks": self.masks, "peak": peak,
                "graph_reports": list(engine.graph_reports)}


def _inputs(engine: StreamEngine, clips: list[Clip], t: int, frames: list) -> dict:
    return {s: check_step_input(engine.schedule(s), frames[s], clips[s][1] if t == 0 else None)
            for s in range(len(clips))}


def measure_network(engine: StreamEngine, clips: list[Clip], frames: list[list[torch.Tensor]], device: torch.device,
                    warmup: int) -> dict:
    """The frames of :func:`preload` ([t][stream], ``TAIL`` more than the clip's
    measured frames) stepped with submit-ahead; nothing decoded or written."""
    clock = _Clock(len(clips), len(frames) - TAIL, warmup)
    for s in range(len(clips)):
        engine.add_stream(s)
    in_flight = None

    def finish() -> None:
        for s, r in in_flight.wait().items():
            clock.result(s, r.index, r.labels)

    with PeakMemory(device) as peak:
        for t in range(len(frames)):
            pending = engine.submit(_inputs(engine, clips, t, frames[t]))
            if in_flight is not None:
                finish()
            in_flight = pending
        finish()
    for s in range(len(clips)):
        engine.remove_stream(s)  # the lanes are free for the next loop on this engine
    return clock.report(peak, engine)


def measure_serial(engine: StreamEngine, clips: list[Clip], decoder: str, device: torch.device, warmup: int,
                   out_dir: Path) -> dict:
    """The loop before issue 21: decode all S frames here, check, submit, write the
    previous frame's PNGs, wait; the next frame starts after that."""
    count = len(clips[0][0])
    clock = _Clock(len(clips), count - TAIL, warmup)
    for s in range(len(clips)):
        engine.add_stream(s)
    previous: dict = {}

    def write(results: dict) -> None:
        for s, r in results.items():
            write_mask(out_dir / f"serial_{s}_{r.index:05d}.png", r.labels, level=SERIAL_PNG_LEVEL)

    with PeakMemory(device) as peak:
        for t in range(count):
            frames = decode_batch([c[0][t] for c in clips], decoder, device)
            pending = engine.submit(_inputs(engine, clips, t, frames))
            write(previous)
            previous = pending.wait()
            for s, r in previous.items():
                clock.result(s, r.index, r.labels)
        write(previous)
    for s in range(len(clips)):
        engine.remove_stream(s)
    return clock.report(peak, engine)


def measure_pipelined(engine: StreamEngine, clips: list[Clip], decoder: str, device: torch.device, warmup: int,
                      out_dir: Path, workers: int | None = None) -> dict:
    """The clips through :class:`FrameLoop` on ``engine`` (its defaults: PNG level 1,
    group commit), ``workers`` decode threads and as many writers."""
    workers = workers or default_workers()
    count = len(clips[0][0])
    clock = _Clock(len(clips), count - TAIL, warmup)
    options = PipelineOptions(decode_ahead=TAIL, decoders=workers, writers=workers,
                              write_depth=max(8, 2 * len(clips)))
    with PeakMemory(device) as peak:
        with FrameLoop(lambda: engine, options) as loop:
            for s, (paths, first_mask) in enumerate(clips):
                folder = FrameFolder(paths[0].parent)
                out = out_dir / f"pipelined_{s}"
                out.mkdir(parents=True, exist_ok=True)
                frames = folder if decoder == "cpu" else frames_for(folder, device, decoder=decoder)
                loop.add(LoopVideo(s, frames, {folder.names[0]: first_mask}, out,
                                   on_frame=lambda name, frame, r, s=s: clock.result(s, r.index, r.labels)))
            while loop.held:
                for outcome in loop.advance():
                    if outcome.error is not None:
                        raise outcome.error
    return clock.report(peak, engine)
