"""An overlay video of a segmentation: each frame with its objects tinted in their
palette colours. Written to a temp file beside the target
(``.<name>.stmae-tmp-<pid>-<token><ext>``, see :mod:`stmae.atomic`) and renamed when
complete; a temp file left by a killed run is removed by the next run writing that
overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stmae.atomic import AtomicPath, remove_stale_temps

from ..errors import InputError
from .mask_io import davis_palette

_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def blend(frame: np.ndarray, labels: np.ndarray, palette: list[int] | None = None, alpha: float = 0.5) -> np.ndarray:
    """frame (H, W, 3) uint8 RGB, labels (H, W) uint8 -> (H, W, 3) uint8 RGB: objects
    blended with their palette colour (``alpha`` of the colour), background unchanged."""
    colours = np.asarray(palette if palette is not None else davis_palette(), dtype=np.float32).reshape(-1, 3)
    tinted = (1 - alpha) * frame.astype(np.float32) + alpha * colours[labels]
    out = np.where((labels > 0)[..., None], tinted, frame.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class CommitOnExit:
    """A writer used as a context manager: ``close()`` (commit) on a clean exit,
    ``abort()`` (remove the partial temp file) on an exception."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class OverlayWriter(CommitOnExit):
    """Writes an overlay video. Use as a context manager: the file appears only when every
    frame was written (on an error the partial temp file is removed)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], palette: list[int] | None = None) -> None:
        import cv2

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise InputError(
                f"overlay {self.path}: unsupported video type {suffix or '(none)'}; use one of "
                f"{', '.join(sorted(_FOURCC))}"
            )
        if not self.path.parent.is_dir():
            raise InputError(f"overlay {self.path}: folder {self.path.parent} does not exist")
        self.palette = palette
        self.size = size
        remove_stale_temps(self.path.parent, self.path.name)
        self._target = AtomicPath(self.path)
        height, width = size
        self._writer = cv2.VideoWriter(str(self._target.tmp), cv2.VideoWriter_fourcc(*_FOURCC[suffix]), float(fps), (width, height))
        if not self._writer.isOpened():
            self._target.abort()
            raise InputError(f"overlay {self.path}: OpenCV cannot write this video type here")
        self.frames = 0

    def add(self, frame: np.ndarray, labels: np.ndarray) -> None:
        import cv2

        self._writer.write(cv2.cvtColor(blend(frame, labels, self.palette), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the video and move it into place."""
        self._writer.release()
        self._target.commit()

    def abort(self) -> None:
        self._writer.release()
        self._target.abort()
