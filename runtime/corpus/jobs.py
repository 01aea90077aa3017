"""The videos of a corpus, as a list of :class:`VideoJob` (one output folder each).

Layouts accepted by :func:`discover_jobs`:

- **Folder of videos** (``--videos DIR --masks-dir MASKS``): each entry of ``DIR`` is a
  video file (``cat.mp4``) or a folder of frames (``dog/00000.jpg ...``); the video's name
  is the file stem or the folder name. Its masks sit in the parallel folder ``MASKS`` under
  the same name: ``MASKS/cat.png`` (the first frame's mask) or ``MASKS/cat/`` (masks named
  after frames: ``00000.png`` ... for a video file, the frame names for a folder; a later
  mask introduces new objects).
- **DAVIS** (``DIR/JPEGImages/<resolution>/<seq>/``, ``DIR/Annotations/<resolution>/<seq>/``):
  each sequence from the annotation of its first frame.
- **YouTube-VOS** (``DIR/JPEGImages/<video>/``, ``DIR/Annotations/<video>/``): each video
  from all its given masks (objects enter where their first mask is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io.frames import FRAME_EXTENSIONS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")


@dataclass(frozen=True)
class VideoJob:
    """One video to segment into ``<out>/<name>/``.

    source: a video file or a folder of frames; first_mask: the first frame's mask, and/or
    masks_dir: masks named after frames. Paths are absolute so that any worker can use them.
    """

    name: str
    source: Path
    first_mask: Path | None = None
    masks_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.first_mask is None and self.masks_dir is None:
            raise ValueError(f"video {self.name!r} has no mask")


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_layout(root: Path) -> bool:
    return (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir()


def discover_jobs(
    videos_dir: str | Path, masks_dir: str | Path | None = None, resolution: str | None = None
) -> list[VideoJob]:
    """The jobs of ``videos_dir`` in any layout above (sorted by name).

    masks_dir: the parallel masks folder of the folder-of-videos layout; resolution: the
    DAVIS resolution folder (default: 480p if present, else the only one).
    Raises InputError naming what is missing.
    """
    root = Path(videos_dir).resolve()
    if not root.is_dir():
        raise InputError(f"--videos {videos_dir} is not a folder")
    if _is_layout(root) and masks_dir is None:
        return dataset_jobs(root, resolution)
    if masks_dir is None:
        raise InputError(
            f"--videos {videos_dir}: give the masks folder with --masks-dir MASKS (MASKS/<name>.png for the "
            f"first frame, or MASKS/<name>/ with masks named after frames), or use a DAVIS/YouTube-VOS root"
        )
    masks = Path(masks_dir).resolve()
    if not masks.is_dir():
        raise InputError(f"--masks-dir {masks_dir} is not a folder")
    jobs: dict[str, VideoJob] = {}
    for entry in _visible(root):
        if entry.is_dir():
            name = entry.name
        elif entry.suffix.lower() in VIDEO_EXTENSIONS:
            name = entry.stem
        else:
            continue
        if name in jobs:
            raise InputError(f"two videos are named {name!r} in {root} ({jobs[name].source.name} and {entry.name}); rename one")
        first, folder = masks / f"{name}.png", masks / name
        if not first.is_file() and not folder.is_dir():
            raise InputError(f"video {entry} has no mask: expected {first} or a folder {folder}/")
        jobs[name] = VideoJob(name, entry, first if first.is_file() else None, folder if folder.is_dir() else None)
    if not jobs:
        raise InputError(
            f"--videos {videos_dir} has no video: expected video files ({', '.join(VIDEO_EXTENSIONS[:4])}, ...) "
            f"or folders of frames"
        )
    return list(jobs.values())


def _resolution_folder(images: Path, resolution: str | None) -> str | None:
    """The DAVIS resolution folder, or None for the flat (YouTube-VOS) layout."""
    subfolders = [p for p in _visible(images) if p.is_dir()]
    if not subfolders:
        raise InputError(f"{images} has no video folder")
    flat = any(f.is_file() and f.suffix.lower() in FRAME_EXTENSIONS for f in _visible(subfolders[0]))
    if flat:
        if resolution is not None:
            raise InputError(f"--resolution {resolution}: {images} has no resolution folders (YouTube-VOS layout)")
        return None
    names = [p.name for p in subfolders]
    if resolution is not None:
        if resolution not in names:
            raise InputError(f"--resolution {resolution}: no {images / resolution} (found {', '.join(names)})")
        return resolution
    if "480p" in names:
        return "480p"
    if len(names) == 1:
        return names[0]
    raise InputError(f"{images} has several resolutions ({', '.join(names)}); choose one with --resolution")


def dataset_jobs(root: str | Path, resolution: str | None = None, names: list[str] | None = None) -> list[VideoJob]:
    """Jobs of a DAVIS root (first annotation only) or a YouTube-VOS root (all given
    masks); ``names`` restricts to those sequences (in that order)."""
    root = Path(root).resolve()
    images, annotations = root / "JPEGImages", root / "Annotations"
    res = _resolution_folder(images, resolution)
    if res is not None:
        images, annotations = images / res, annotations / res
    names = names if names is not None else [p.name for p in _visible(images) if p.is_dir()]
    jobs = []
    for name in names:
        frames, masks = images / name, annotations / name
        if not frames.is_dir():
            raise InputError(f"sequence {name!r}: {frames} does not exist")
        if not masks.is_dir():
            raise InputError(f"sequence {name!r}: {masks} does not exist")
        if res is None:
            jobs.append(VideoJob(name, frames, None, masks))
            continue
        stems = sorted(p.stem for p in frames.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
        first = masks / f"{stems[0]}.png" if stems else None
        if first is None or not first.is_file():
            raise InputError(f"sequence {name!r}: no annotation of its first frame ({first})")
        jobs.append(VideoJob(name, frames, first, None))
    if not jobs:
        raise InputError(f"{images} has no sequence")
    return jobs


def davis_jobs(root: str | Path, resolution: str, names: list[str]) -> list[VideoJob]:
    """Jobs of DAVIS sequences ``names`` at ``resolution`` (stmae-eval)."""
    return dataset_jobs(root, resolution, names)
