"""Video input: a folder of frames (jpg/png, in natural name order) or a video file (OpenCV).

Frames come out as (H, W, 3) uint8 RGB with a name each (the file's stem for a folder,
``00000``, ``00001``, ... for a video); every frame must have the size of the first.

Guards: image sizes are read from the headers and bounded (:func:`check_pixels`, at most
``STMAE_MAX_PIXELS`` pixels, default 64 Mpx) before any frame is decoded; names sort
naturally (``frame_2`` before ``frame_10``); 16-bit greyscale frames are converted to 8 bits
exactly (value / 257), 32-bit integer and float images are refused.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from stmae.atomic import is_temp_name

from ..errors import InputError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def natural_key(name: str) -> tuple:
    """Sort key in which digit runs compare as numbers: frame_2 < frame_10."""
    parts = re.split(r"(\d+)", name)
    return tuple((int(p), p) if i % 2 else (p.lower(), p) for i, p in enumerate(parts))


def max_pixels() -> int:
    """The largest image (width x height) read: ``STMAE_MAX_PIXELS`` or 64 Mpx."""
    value = os.environ.get("STMAE_MAX_PIXELS", "")
    try:
        return int(value) if value.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise InputError(f"STMAE_MAX_PIXELS must be a whole number of pixels, got {value!r}") from None


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse an image larger than :func:`max_pixels` before it is decoded."""
    limit = max_pixels()
    if width * height > limit:
        raise InputError(
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} Mpx), above the limit of "
            f"{limit / 1e6:.0f} Mpx; resize it, or raise the limit with STMAE_MAX_PIXELS"
        )


@contextlib.contextmanager
def open_image(path: Path, what: str):
    """PIL.Image.open with the header's size checked before anything is decoded."""
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{what} is too large to decode safely ({exc}); resize it") from None
    except _READ_ERRORS as exc:
        raise InputError(f"{what} cannot be read as an image ({exc})") from None
    with img:
        check_pixels(img.size[0], img.size[1], what)
        yield img


def to_rgb8(img: Image.Image, what: str) -> np.ndarray:
    """An opened image as (H, W, 3) uint8 RGB; 16-bit greyscale scaled exactly to 8 bits."""
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and img.format == "PNG"):
        grey = np.asarray(img).astype(np.uint32)
        if grey.max(initial=0) > 65535:
            raise InputError(f"{what} has values above 16 bits; give 8- or 16-bit images")
        grey8 = ((grey * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey8[..., None], 3, axis=2)
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        raise InputError(
            f"{what} is a {img.mode} image (32-bit integer or float); give 8- or 16-bit images (e.g. PNG or JPEG)"
        )
    return np.array(img.convert("RGB"))


def read_frame(path: str | Path) -> np.ndarray:
    """One image file -> (H, W, 3) uint8 RGB (size bounded, 16-bit converted)."""
    return _read_rgb(Path(path))


def _read_rgb(path: Path) -> np.ndarray:
    what = f"frame {path}"
    with open_image(path, what) as img:
        try:
            return to_rgb8(img, what)
        except _READ_ERRORS as exc:
            raise InputError(f"{what} cannot be read as an image ({exc})") from None


class FrameFolder:
    """Frames of a folder, in natural name order; sizes are checked when opened."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder} is not a folder of frames")
        self.paths = sorted(
            (p for p in self.folder.iterdir()
             if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS and not is_temp_name(p.name)),
            key=lambda p: natural_key(p.name),
        )
        if not self.paths:
            raise InputError(
                f"{self.folder} has no frames: expected .jpg or .png images, one per frame"
            )
        self.names = [p.stem for p in self.paths]
        if len(set(self.names)) != len(self.names):
            raise InputError(f"{self.folder} has frames with the same name and different extensions")
        self.size = self._check_sizes()

    def _check_sizes(self) -> tuple[int, int]:
        sizes = {}
        for path in self.paths:
            with open_image(path, f"frame {path}") as img:
                sizes[path] = img.size
        w0, h0 = sizes[self.paths[0]]
        for path, (w, h) in sizes.items():
            if (w, h) != (w0, h0):
                raise InputError(
                    f"frames differ in size: {path.name} is {w}x{h} but {self.paths[0].name} is "
                    f"{w0}x{h0}; all frames of a video must have the same size"
                )
        return h0, w0

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as (H, W, 3) uint8 RGB, size checked (what iterating gives; for
        decoders that run ahead in parallel)."""
        path = self.paths[index]
        frame = _read_rgb(path)
        if frame.shape[:2] != self.size:
            raise InputError(f"frame {path} changed size while reading")
        return frame

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for index, name in enumerate(self.names):
            yield name, self.read(index)


class VideoFile:
    """Frames of a video file decoded with OpenCV, named 00000, 00001, ..."""

    def __init__(self, path: str | Path) -> None:
        import cv2

        self.path = Path(path)
        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                raise InputError(f"{self.path} cannot be opened as a video (unknown format or damaged file)")
            declared = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            check_pixels(declared[0], declared[1], f"video {self.path}")  # before decoding a frame
            ok, frame = capture.read()
            if not ok or frame is None:
                raise InputError(f"{self.path} has no frame that can be decoded")
            check_pixels(frame.shape[1], frame.shape[0], f"video {self.path}")
            self.size = frame.shape[:2]
            self.count_hint = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 1)
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and fps > 0 else 25.0
        finally:
            capture.release()

    def __len__(self) -> int:
        """Frame count announced by the container (may be approximate)."""
        return self.count_hint

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok or frame is None:
                    break
                if frame.shape[:2] != self.size:
                    raise InputError(f"{self.path}: frame {index} has a different size from frame 0")
                yield f"{index:05d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()


def missing_frames(frames: FrameFolder | VideoFile, read: int) -> int:
    """Frames a video container announced (``len(frames)``) that were not decoded when
    ``read`` were: a truncated or damaged file ends early. 0 for a folder of frames.
    The one check of every path (single video, corpus workers, batched lanes)."""
    return max(len(frames) - read, 0) if isinstance(frames, VideoFile) else 0


def truncation_warning(read: int, missing: int) -> str | None:
    """The one-line warning for a video that ended ``missing`` frames early, else None."""
    if not missing:
        return None
    return (
        f"the video ended after {read} of the {read + missing} frames its container announces ({missing} "
        f"missing: truncated or damaged file); masks were written for the {read} decoded frames only"
    )


def open_frames(path: str | Path) -> FrameFolder | VideoFile:
    """A folder of frames or a video file; raises InputError if neither can be read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist; give a folder of frames or a video file")
    if path.is_dir():
        return FrameFolder(path)
    if path.suffix.lower() in FRAME_EXTENSIONS:
        raise InputError(f"input {path} is a single image; give a folder of frames or a video file")
    return VideoFile(path)
