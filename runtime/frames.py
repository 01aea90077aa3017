"""Video input: a folder of frames (jpg/png, sorted by name) or a video file (OpenCV).

Frames come out as (H, W, 3) uint8 RGB with a name each (the file's stem for a folder,
``00000``, ``00001``, ... for a video); every frame must have the size of the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"frame {path} cannot be read as an image ({exc})") from None


class FrameFolder:
    """Frames of a folder, sorted by file name; sizes are checked when opened."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.paths = sorted(
            p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS
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
            try:
                with Image.open(path) as img:
                    sizes[path] = img.size
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise InputError(f"frame {path} cannot be read as an image ({exc})") from None
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

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for name, path in zip(self.names, self.paths):
            frame = _read_rgb(path)
            if frame.shape[:2] != self.size:
                raise InputError(f"frame {path} changed size while reading")
            yield name, frame


class VideoFile:
    """Frames of a video file decoded with OpenCV, named 00000, 00001, ..."""

    def __init__(self, path: str | Path) -> None:
        import cv2

        self.path = Path(path)
        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                raise InputError(f"{self.path} cannot be opened as a video (unknown format or damaged file)")
            ok, frame = capture.read()
            if not ok or frame is None:
                raise InputError(f"{self.path} has no frame that can be decoded")
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
