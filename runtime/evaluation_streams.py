"""DAVIS evaluation with several sequences stepped together by the batched engine
(``stmae-eval --streams S``): S sequences hold S lanes; when one ends it is scored and
leaves, and the next sequence joins in its place. Each sequence gets exactly the masks it
gets alone (the engine's equivalence), so the scores are those of one at a time.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .config import SessionConfig
from .engine.stream_engine import EngineOptions, StreamEngine
from .sequence_scores import SequenceResult, named_sequence, open_sequence, score_sequence
from .engine.gpu_decode import frames_for
from .io.mask_io import read_mask, write_mask
from .engine.session import check_step_input


class _Running:
    def __init__(self, name: str, opened, device) -> None:
        frames, self.names, self.first_mask, self.palette = opened
        self.frames = iter(frames_for(frames, device))
        self.predictions: list = []
        self.truths: list = []
        self.start = time.perf_counter()


def evaluate_streams(
    backend,
    paths: dict[str, tuple[Path, Path]],
    config: SessionConfig,
    out: Path | None,
    max_frames: int | None,
    on_frame: Callable[[str, int], None] | None,
    streams: int,
    options: EngineOptions | None = None,
) -> tuple[SequenceResult, ...]:
    """Segment and score ``paths`` (name -> (frames dir, annotations dir)) ``streams`` at
    a time. Results come in the order of ``paths``; a sequence's seconds are its wall time
    while sharing the device with the others."""
    device = backend.device
    # CUDA graphs without torch.compile: a compile per bucket shape (object counts vary
    # between sequences) would cost more than it saves over one dataset pass.
    options = options or EngineOptions.fastest(device, compile=False)
    engine = StreamEngine(backend, config, replace(options, keep_prob=False))
    waiting = deque(paths)
    running: dict[str, _Running] = {}
    done: dict[str, SequenceResult] = {}
    while waiting or running:
        while waiting and len(running) < streams:
            name = waiting.popleft()
            with named_sequence(name):
                running[name] = _Running(name, open_sequence(name, *paths[name], out, max_frames), device)
            engine.add_stream(name)
        inputs = {}
        frame_names = {}
        for name, run in running.items():
            i = len(run.predictions)
            frame_name, frame = next(run.frames)
            frame_names[name] = frame_name
            with named_sequence(name):
                inputs[name] = check_step_input(engine.schedule(name), frame, run.first_mask if i == 0 else None)
        for name, result in engine.step(inputs).items():
            run = running[name]
            frame_name = frame_names[name]
            gt_dir = paths[name][1]
            run.predictions.append(result.labels)
            run.truths.append(read_mask(gt_dir / f"{frame_name}.png")[0])
            if out is not None:
                write_mask(out / name / f"{frame_name}.png", result.labels, run.palette)
            if on_frame is not None:
                on_frame(name, len(run.predictions) - 1)
            if len(run.predictions) == len(run.names):
                done[name] = score_sequence(name, run.predictions, run.truths, time.perf_counter() - run.start)
                engine.remove_stream(name)
                del running[name]
    return tuple(done[name] for name in paths)
