"""Video folders in the DAVIS and YouTube-VOS layouts, read for one-shot training.

Training opens only the annotation of each video's first annotated frame: the other
annotation files are listed (to find the first one) but never opened.

DAVIS layout:       <root>/JPEGImages/<res>/<video>/<frame>.jpg
                    <root>/Annotations/<res>/<video>/<frame>.png
YouTube-VOS layout: <root>/JPEGImages/<video>/<frame>.jpg
                    <root>/Annotations/<video>/<frame>.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.io.frames import natural_key, read_frame
from runtime.io.mask_io import read_mask, without_void

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class VideoEntry:
    """One training video: name, its frame files from the annotated frame on (sorted),
    and the annotation file of that first frame."""

    name: str
    frames: tuple[Path, ...]
    first_annotation: Path


def read_rgb(path: Path) -> np.ndarray:
    """-> (H, W, 3) uint8 RGB (the runtime's reader: size bounded, 16-bit converted)."""
    return read_frame(path)


def read_labels(path: Path) -> np.ndarray:
    """A palette or grayscale PNG -> (H, W) uint8 labels (0 = background; binary 0/255
    masks give 0/1; void 255 becomes background; lossy masks are refused)."""
    return without_void(read_mask(path)[0])


def _video_entry(name: str, frame_dir: Path, anno_dir: Path) -> VideoEntry | None:
    frames = sorted((p for p in frame_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: natural_key(p.name))
    if not anno_dir.is_dir():
        return None
    annotated = sorted((p for p in anno_dir.iterdir() if p.suffix.lower() == ".png"),
                       key=lambda p: natural_key(p.name))
    if not frames or not annotated:
        return None
    first = annotated[0]
    start = next((i for i, f in enumerate(frames) if f.stem == first.stem), None)
    if start is None:
        raise ValueError(
            f"{first}: the first annotation has no frame {first.stem}.* in {frame_dir}"
        )
    return VideoEntry(name=name, frames=tuple(frames[start:]), first_annotation=first)


def list_videos(
    root: str | Path,
    resolution: str | None = None,
    sequences: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> list[VideoEntry]:
    """Videos of a DAVIS (``resolution`` given) or YouTube-VOS (``resolution`` None) folder.

    sequences: only these (in this order; each must exist); exclude: never these."""
    root = Path(root)
    frame_root = root / "JPEGImages"
    anno_root = root / "Annotations"
    if resolution is not None:
        frame_root, anno_root = frame_root / resolution, anno_root / resolution
    if not frame_root.is_dir():
        raise ValueError(
            f"{frame_root} does not exist: expected the "
            f"{'DAVIS' if resolution else 'YouTube-VOS'} layout (see train/video_folders.py)"
        )
    names = sorted(p.name for p in frame_root.iterdir() if p.is_dir())
    if sequences:
        missing = [s for s in sequences if s not in names]
        if missing:
            raise ValueError(f"sequences {missing} are not in {frame_root}")
        names = list(sequences)
    entries = []
    for name in names:
        if name in exclude:
            continue
        entry = _video_entry(name, frame_root / name, anno_root / name)
        if entry is not None:
            entries.append(entry)
    return entries
