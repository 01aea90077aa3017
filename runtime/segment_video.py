"""Segment a video (folder of frames or video file) into a folder of palette PNGs.

The library function behind ``stmae-segment``: inputs are checked before anything is
written, every PNG is written atomically, and the optional overlay video appears only
when complete. The frames go through the pipelined loop (:mod:`runtime.io.pipeline`):
decoded ahead, masks written behind the network's work by a writer pool and made durable
as a group commit, with bounded queues, so memory stays flat; the run's record is
completed only after the masks are synced.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from stmae.outputs import probe_writable, real_path, recorded_files, written_by

from .config import SessionConfig
from .errors import InputError, output_refusals_as_input_errors
from .io.frames import FrameFolder, VideoFile, missing_frames, natural_key, open_frames, truncation_warning
from .io.gate import begin_run, check_aliases, check_output, finish_run
from .io.mask_io import existing_masks, labels_present, read_mask
from .io.overlap import BackgroundWriter
from .io.overlay import OverlayWriter, check_overlay_path

if TYPE_CHECKING:  # the engine and the frame loop import torch: only segment_video() needs them
    from .backends.base import Backend
    from .io.pipeline import PipelineOptions


@dataclass(frozen=True)
class Annotations:
    """Masks given for the video: frame name -> label map, and the palette to write with."""

    masks: dict[str, np.ndarray]
    palette: list[int] | None

    @property
    def first_name(self) -> str:
        return min(self.masks, key=natural_key)


@dataclass(frozen=True)
class SegmentSummary:
    """frames: frames segmented; objects: labels segmented; seconds: wall time of the loop;
    missing_frames: frames a video container announced but that could not be decoded (a
    truncated or damaged file; 0 for folders of frames)."""

    frames: int
    objects: tuple[int, ...]
    seconds: float
    out_dir: Path
    missing_frames: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def line(self, size: str = "") -> str:
        """'82 frames, 1 object, size 240 (...), 3.20 s, 25.60 FPS -> out' (size: how the
        frames were sized, as the command line resolved it; omitted when empty)."""
        missing = f" ({self.missing_frames} announced frames missing)" if self.missing_frames else ""
        n = len(self.objects)
        sized = f"{size}, " if size else ""
        return (
            f"{self.frames} frames{missing}, {n} object{'' if n == 1 else 's'}, {sized}{self.seconds:.2f} s, "
            f"{self.fps:.2f} FPS -> {self.out_dir}"
        )

    def warning(self) -> str | None:
        """A one-line warning when the input ended early, else None."""
        return truncation_warning(self.frames, self.missing_frames)


def _size_text(shape: tuple[int, int]) -> str:
    return f"{shape[1]}x{shape[0]}"


def load_annotations(
    frames: FrameFolder | VideoFile,
    first_mask: str | Path | None = None,
    masks_dir: str | Path | None = None,
) -> Annotations:
    """Read and check the given masks against the frames (sizes, names, objects).

    first_mask: the mask of the first frame; masks_dir: PNG masks named after frames
    (``00000.png`` ... for a video), for any frames.
    """
    if first_mask is None and masks_dir is None:
        raise InputError("no mask given: pass --mask FIRST.png (the first frame's objects) or --masks-dir DIR")
    first_name = frames.names[0] if isinstance(frames, FrameFolder) else "00000"
    masks: dict[str, np.ndarray] = {}
    sources: dict[str, Path] = {}
    palette = None
    if first_mask is not None:
        labels, palette = read_mask(first_mask)
        masks[first_name], sources[first_name] = labels, Path(first_mask)
    if masks_dir is not None:
        folder = Path(masks_dir)
        if not folder.is_dir():
            raise InputError(f"--masks-dir {folder} is not a folder")
        files = existing_masks(folder)
        if not files:
            raise InputError(f"--masks-dir {folder} has no PNG mask")
        for path in files:
            name = path.stem
            if name in masks:
                raise InputError(f"the mask of frame {name} is given twice (--mask and {path}); give it once")
            if isinstance(frames, FrameFolder):
                if name not in frames.names:
                    raise InputError(f"{path} is named after no input frame (frames are named like {frames.names[0]})")
            elif not re.fullmatch(r"\d{5,}", name):
                raise InputError(f"{path}: masks for a video are named after the frame number, e.g. 00042.png")
            labels, file_palette = read_mask(path)
            masks[name], sources[name] = labels, path
            palette = palette if palette is not None else file_palette
    for name, labels in masks.items():
        if labels.shape != tuple(frames.size):
            raise InputError(
                f"mask {sources[name]} is {_size_text(labels.shape)} but the frames are "
                f"{_size_text(tuple(frames.size))}; the mask must have the frames' size"
            )
    first = min(masks, key=natural_key)
    if not labels_present(masks[first]):
        raise InputError(
            f"the first mask ({sources[first]}) has no object: every pixel is 0 (background) or 255 "
            f"(void); label each object with its own value 1..254"
        )
    return Annotations(masks, palette)


TOOL = "stmae-segment"


def check_output_folder(out_dir: str | Path, overwrite: bool, tool: str = TOOL,
                        inputs: dict[str, str | Path | None] | None = None, create: bool = True) -> Path:
    """The output gate (:func:`runtime.io.gate.check_output`) for a folder of masks: not
    aliasing ``inputs``; masks already there replaced only with ``overwrite`` and only if
    ``tool`` wrote them (its output record); created (``create``) and proven writable."""
    out = Path(out_dir)
    with output_refusals_as_input_errors():
        return check_output(out, "--out", inputs or {}, tool=tool, earlier=existing_masks(out),
                            owned=written_by(out, tool), overwrite=overwrite, noun="masks", create=create)


def mask_names(frames, count: int | None = None) -> list[str]:
    """The mask files a run writes for ``frames`` (the first ``count``; all announced if None)."""
    if isinstance(frames, FrameFolder):
        names = frames.names
    else:  # a video (or its first frames): 00000, 00001, ... (the announced count may be approximate)
        names = [f"{i:05d}" for i in range(len(frames) if count is None else count)]
    return [f"{name}.png" for name in (names if count is None else names[:count])]


def check_targets(
    input_path: str | Path, out_dir: str | Path, overlay: str | Path | None, overwrite: bool,
    mask: str | Path | None = None, masks_dir: str | Path | None = None,
    other_inputs: dict[str, str | Path | None] | None = None,
) -> None:
    """Refuse outputs that alias an input (``--out`` or ``--overlay`` equal to, inside, or
    holding ``--input``/``--mask``/``--masks-dir`` or ``other_inputs``, such as the
    ``--checkpoint``), and an existing overlay unless ``overwrite`` and an earlier run of
    this tool into ``out_dir`` wrote it."""
    inputs = {"--input": input_path, "--mask": mask, "--masks-dir": masks_dir, **(other_inputs or {})}
    with output_refusals_as_input_errors():
        check_aliases(out_dir, "--out", inputs)
        if overlay is not None:
            check_aliases(overlay, "--overlay", inputs, folder_output=False)
            if real_path(overlay) == real_path(out_dir):
                raise InputError(f"--overlay {overlay} is the --out folder; give the overlay its own file name")
        if overlay is not None and Path(overlay).parent.is_dir():
            probe_writable(Path(overlay).parent, "the folder of --overlay")
    if overlay is None:
        return
    if Path(overlay).is_dir():
        raise InputError(f"--overlay {overlay} is a folder; give a video file name such as result.mp4")
    check_overlay_path(overlay)
    if not Path(overlay).exists():
        return
    if not overwrite:
        raise InputError(f"overlay {overlay} already exists; pass --overwrite to replace it")
    if str(real_path(overlay)) not in recorded_files(out_dir, TOOL):
        raise InputError(
            f"--overwrite replaces only an overlay that {TOOL} wrote with this --out, and {overlay} is not "
            f"recorded in {Path(out_dir) / '.stmae-output.json'}; it was left untouched: choose another --overlay"
        )


def unused_masks_error(unused, count: int, out: Path | None = None) -> InputError:
    """The error for given masks of frames the input does not have (``out``: where the
    masks of the frames it has were written, if they stay)."""
    written = f" and written to {out}" if out is not None else ""
    return InputError(
        f"masks for frames {', '.join(list(unused)[:5])} were not used: the input has no such frame "
        f"({count} frames were segmented{written})"
    )


def segment_video(
    backend: Backend,
    input_path: str | Path,
    out_dir: str | Path,
    *,
    first_mask: str | Path | None = None,
    masks_dir: str | Path | None = None,
    config: SessionConfig | None = None,
    overwrite: bool = False,
    overlay: str | Path | None = None,
    on_frame: Callable[[int], None] | None = None,
    frames: FrameFolder | VideoFile | None = None,
    annotations: Annotations | None = None,
    record: bool = True,
    pipeline: PipelineOptions | None = None,
) -> SegmentSummary:
    """Segment ``input_path`` into ``out_dir/<frame name>.png``.

    Masks: ``first_mask`` for the first frame and/or ``masks_dir`` (masks named after
    frames). A mask after the first introduces the labels not seen before (YouTube-VOS
    style); labels already known are left to the tracker. ``frames``/``annotations``:
    already opened/checked inputs (as :func:`open_frames` / :func:`load_annotations` give).
    on_frame(i) is called after every frame. record: leave this tool's output record
    (``.stmae-output.json``) in ``out_dir`` (False where a caller keeps its own records,
    e.g. :mod:`runtime.corpus`); it says "complete" only once every mask is synced.
    pipeline: how the loop decodes ahead and writes (PNG level, threads, group commit).
    """
    frames = frames if frames is not None else open_frames(input_path)
    annotations = annotations if annotations is not None else load_annotations(frames, first_mask, masks_dir)
    check_targets(input_path, out_dir, overlay, overwrite, first_mask, masks_dir)
    out = check_output_folder(out_dir, overwrite)
    if record:  # the earlier run's masks (as its record lists them) are removed: never a mix
        begin_run(out, TOOL, outputs=mask_names(frames), candidates=existing_masks(out), files=[overlay],
                  input=str(real_path(input_path)))
    # On CUDA the torch backend's step is captured in a CUDA graph (runtime.engine.cuda_graphs).
    from .engine.stream_engine import EngineOptions, StreamEngine
    from .io.pipeline import FrameLoop, LoopVideo

    options = replace(EngineOptions.fastest(backend.device, compile=False), keep_prob=False)
    fps = frames.fps if isinstance(frames, VideoFile) else 25.0
    writer = OverlayWriter(overlay, fps, tuple(frames.size), annotations.palette) if overlay else None
    overlay_jobs = BackgroundWriter(depth=4) if writer is not None else None  # in frame order
    count = 0

    def frame_done(name: str, frame: np.ndarray, result) -> None:
        nonlocal count
        count += 1
        if overlay_jobs is not None:
            overlay_jobs.submit(partial(writer.add, frame, result.labels))
        if on_frame is not None:
            on_frame(count)

    video = LoopVideo("video", frames, annotations.masks, out, annotations.palette, on_frame=frame_done)
    start = time.perf_counter()
    try:
        with FrameLoop(lambda: StreamEngine(backend, config, options), pipeline) as loop:
            outcome = loop.run(video)  # returns once the masks are synced and in place
            if outcome.error is not None:
                raise outcome.error
        if overlay_jobs is not None:
            overlay_jobs.close()
    except BaseException:
        if overlay_jobs is not None:
            overlay_jobs.abort()
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - start
    if record:
        finish_run(out, TOOL, mask_names(frames, count))
    if outcome.unused:
        raise unused_masks_error(outcome.unused, count, out)
    missing = missing_frames(frames, count)
    return SegmentSummary(count, outcome.objects, seconds, out, missing)
