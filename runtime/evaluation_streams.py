"""DAVIS sequences segmented through the pipelined loop (:mod:`runtime.io.pipeline`), one at
a time or several stepped together by the batched engine (``stmae-eval --streams S``): S
sequences hold S lanes; when one ends it is scored and leaves, and the next sequence joins
in its place. Each sequence gets exactly the masks it gets alone (the engine's
equivalence), so the scores are those of one at a time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .config import SessionConfig
from .engine.gpu_decode import frames_for
from .engine.stream_engine import EngineOptions, StreamEngine
from .io.mask_io import read_mask
from .io.pipeline import FrameLoop, LoopVideo, PipelineOptions
from .sequence_scores import SequenceResult, named_sequence, open_sequence, score_sequence


class _Scores:
    """One sequence's predictions and annotations, frame by frame."""

    def __init__(self, name: str, gt_dir: Path, on_frame: Callable[[str, int], None] | None) -> None:
        self.name, self.gt_dir, self.on_frame = name, gt_dir, on_frame
        self.predictions: list = []
        self.truths: list = []

    def frame_done(self, frame_name: str, frame, result) -> None:
        self.predictions.append(result.labels)
        self.truths.append(read_mask(self.gt_dir / f"{frame_name}.png")[0])
        if self.on_frame is not None:
            self.on_frame(self.name, len(self.predictions) - 1)


def evaluate_streams(
    backend,
    paths: dict[str, tuple[Path, Path]],
    config: SessionConfig,
    out: Path | None,
    max_frames: int | None,
    on_frame: Callable[[str, int], None] | None,
    streams: int,
    options: EngineOptions | None = None,
    pipeline: PipelineOptions | None = None,
    device_decode: bool = True,
) -> tuple[SequenceResult, ...]:
    """Segment and score ``paths`` (name -> (frames dir, annotations dir)) ``streams`` at
    a time. Results come in the order of ``paths``; a sequence's seconds are its wall time
    while sharing the device with the others. options: the engine's (default: CUDA graphs
    without torch.compile on CUDA); pipeline: decoding ahead, PNG level, writers;
    device_decode: frames decoded as :func:`runtime.engine.gpu_decode.frames_for` chooses
    (False: the frame folder as it is, decoded on the loop's pool)."""
    device = backend.device
    # CUDA graphs without torch.compile: a compile per bucket shape (object counts vary
    # between sequences) would cost more than it saves over one dataset pass.
    options = replace(options or EngineOptions.fastest(device, compile=False), keep_prob=False)
    waiting = deque(paths)
    scores: dict[str, _Scores] = {}
    done: dict[str, SequenceResult] = {}
    with FrameLoop(lambda: StreamEngine(backend, config, options), pipeline) as loop:
        while waiting or loop.held:
            while waiting and len(loop.held) < streams:
                name = waiting.popleft()
                with named_sequence(name):
                    frames, names, first_mask, palette = open_sequence(name, *paths[name], out, max_frames)
                scores[name] = _Scores(name, paths[name][1], on_frame)
                loop.add(LoopVideo(
                    name, frames_for(frames, device) if device_decode else frames, {names[0]: first_mask},
                    out / name if out is not None else None, palette, limit=len(names),
                    on_frame=scores[name].frame_done,
                ))
            for outcome in loop.advance():  # its masks are on disk (synced) when it comes
                if outcome.error is not None:
                    with named_sequence(outcome.key):
                        raise outcome.error
                run = scores.pop(outcome.key)
                done[outcome.key] = score_sequence(outcome.key, run.predictions, run.truths, outcome.seconds)
    return tuple(done[name] for name in paths)
