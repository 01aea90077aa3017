"""Segment a video (folder of frames or video file) into a folder of palette PNGs.

The library function behind ``stmae-segment``: inputs are checked before anything is
written, every PNG is written atomically, and the optional overlay video appears only
when complete. Frames are decoded ahead and masks written behind the network's work, in
background threads with bounded queues (:mod:`runtime.io.overlap`), so memory stays flat.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from stmae.atomic import remove_stale_temps
from stmae.outputs import (
    prepare_output_folder, probe_writable, real_path, recorded_files, refuse_alias, write_record, written_by,
)

from .backends.base import Backend
from .config import SessionConfig
from .engine.stream_engine import EngineOptions
from .errors import InputError, output_refusals_as_input_errors
from .io.frames import FrameFolder, VideoFile, natural_key, open_frames
from .io.mask_io import VOID_LABEL, existing_masks, read_mask, write_mask
from .interrupt import checkpoint
from .io.overlap import BackgroundWriter, Prefetcher
from .io.overlay import OverlayWriter
from .engine.session import VideoSession


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
        if not self.missing_frames:
            return None
        return (
            f"the video ended after {self.frames} of the {self.frames + self.missing_frames} frames its "
            f"container announces ({self.missing_frames} missing: truncated or damaged file); masks were "
            f"written for the {self.frames} decoded frames only"
        )


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


def labels_present(labels: np.ndarray) -> list[int]:
    """Object labels of a label map: every value but 0 (background) and 255 (void)."""
    return [int(v) for v in np.unique(labels) if v != 0 and v != VOID_LABEL]


TOOL = "stmae-segment"


def check_output_folder(out_dir: str | Path, overwrite: bool, tool: str = TOOL) -> Path:
    """Create ``out_dir`` and prove it writable; refuse one that already has masks unless
    ``overwrite``, and even then unless ``tool`` wrote them (its output record is there)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; choose a folder for the masks")
    existing = existing_masks(out)
    if existing and not overwrite:
        raise InputError(
            f"output folder {out} already has {len(existing)} mask(s) (e.g. {existing[0].name}); "
            f"pass --overwrite to replace them, or choose another --out"
        )
    if existing and not written_by(out, tool):
        raise InputError(
            f"--overwrite replaces only masks that {tool} wrote, and {out} has {len(existing)} PNG file(s) "
            f"(e.g. {existing[0].name}) but no {tool} record; they were left untouched: choose another --out"
        )
    with output_refusals_as_input_errors():
        prepare_output_folder(out, "--out")
    remove_stale_temps(out)
    return out


def check_targets(
    input_path: str | Path, out_dir: str | Path, overlay: str | Path | None, overwrite: bool,
    mask: str | Path | None = None, masks_dir: str | Path | None = None,
) -> None:
    """Refuse outputs that alias an input (``--out`` or ``--overlay`` equal to, inside, or
    holding ``--input``/``--mask``/``--masks-dir``), and an existing overlay unless
    ``overwrite`` and an earlier run of this tool into ``out_dir`` wrote it."""
    inputs = {"--input": input_path, "--mask": mask, "--masks-dir": masks_dir}
    with output_refusals_as_input_errors():
        refuse_alias(out_dir, "--out", inputs)
        if overlay is not None:
            refuse_alias(overlay, "--overlay", inputs, folder_output=False)
            if real_path(overlay) == real_path(out_dir):
                raise InputError(f"--overlay {overlay} is the --out folder; give the overlay its own file name")
        if overlay is not None and Path(overlay).parent.is_dir():
            probe_writable(Path(overlay).parent, "the folder of --overlay")
    if overlay is None or not Path(overlay).exists():
        return
    if Path(overlay).is_dir():
        raise InputError(f"--overlay {overlay} is a folder; give a video file name such as result.mp4")
    if not overwrite:
        raise InputError(f"overlay {overlay} already exists; pass --overwrite to replace it")
    if str(real_path(overlay)) not in recorded_files(out_dir, TOOL):
        raise InputError(
            f"--overwrite replaces only an overlay that {TOOL} wrote with this --out, and {overlay} is not "
            f"recorded in {Path(out_dir) / '.stmae-output.json'}; it was left untouched: choose another --overlay"
        )


def _write_job(path: Path, labels: np.ndarray, palette, writer: OverlayWriter | None, frame: np.ndarray):
    def job() -> None:
        write_mask(path, labels, palette)
        if writer is not None:
            writer.add(frame, labels)

    return job


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
) -> SegmentSummary:
    """Segment ``input_path`` into ``out_dir/<frame name>.png``.

    Masks: ``first_mask`` for the first frame and/or ``masks_dir`` (masks named after
    frames). A mask after the first introduces the labels not seen before (YouTube-VOS
    style); labels already known are left to the tracker. ``frames``/``annotations``:
    already opened/checked inputs (as :func:`open_frames` / :func:`load_annotations` give).
    on_frame(i) is called after every frame. record: leave this tool's output record
    (``.stmae-output.json``) in ``out_dir`` (False where a caller keeps its own records,
    e.g. :mod:`runtime.corpus`).
    """
    frames = frames if frames is not None else open_frames(input_path)
    annotations = annotations if annotations is not None else load_annotations(frames, first_mask, masks_dir)
    check_targets(input_path, out_dir, overlay, overwrite, first_mask, masks_dir)
    out = check_output_folder(out_dir, overwrite)
    if record:
        write_record(out, TOOL, files=[overlay] if overlay else [], input=str(real_path(input_path)))
    # On CUDA the torch backend's step is captured in a CUDA graph (runtime.engine.cuda_graphs).
    options = replace(EngineOptions.fastest(backend.device, compile=False), keep_prob=False)
    session = VideoSession(backend, config, options=options)
    fps = frames.fps if isinstance(frames, VideoFile) else 25.0
    writer = OverlayWriter(overlay, fps, tuple(frames.size), annotations.palette) if overlay else None
    used: set[str] = set()
    count = 0
    start = time.perf_counter()
    jobs = BackgroundWriter(depth=4)
    try:
        with Prefetcher(frames, depth=2) as decoded:
            for name, frame in decoded:
                checkpoint()  # a Ctrl-C stops here, between frames (runtime.interrupt)
                mask = annotations.masks.get(name)
                objects = None
                if mask is not None:
                    used.add(name)
                    if len(session.object_labels):
                        objects = [l for l in labels_present(mask) if l not in session.object_labels]
                        if not objects:
                            mask, objects = None, None
                result = session.step(frame, mask, objects)
                jobs.submit(_write_job(out / f"{name}.png", result.labels, annotations.palette, writer, frame))
                count += 1
                if on_frame is not None:
                    on_frame(count)
        jobs.close()
    except BaseException:
        jobs.abort()
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - start
    unused = sorted(set(annotations.masks) - used)
    if unused:
        raise InputError(
            f"masks for frames {', '.join(unused[:5])} were not used: the input has no such frame "
            f"({count} frames were segmented and written to {out})"
        )
    missing = max(len(frames) - count, 0) if isinstance(frames, VideoFile) else 0
    return SegmentSummary(count, session.object_labels, seconds, out, missing)
