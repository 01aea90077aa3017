"""An overlay video of a segmentation: each frame with its objects tinted in their
palette colours, in a format that browsers play.

- ``.mp4`` / ``.m4v`` / ``.mov``: H.264 (libx264, yuv420p). H.264 in 4:2:0 needs even
  frame sizes, so an odd width or height is padded by one black column or row at the right
  or bottom; nothing of the frame is cut, and the original size is recorded in the
  container's ``comment`` tag (``stmae-overlay original-size=WxH``).
- ``.webm``: VP9 (libvpx-vp9, yuv420p) at exactly the frame's size.

Both are encoded with the FFmpeg that PyAV's wheels bundle (OpenCV's bundled FFmpeg has no
H.264 encoder and would write MPEG-4 Part 2, which browsers do not play). The file is
written to a temp file beside the target (``.<name>.stmae-tmp-<pid>-<token><ext>``, see
:mod:`stmae.atomic`) and renamed when complete; a temp file left by a killed run is removed
by the next run writing that overlay.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from stmae.atomic import AtomicPath, remove_stale_temps

from ..errors import BackendUnavailable, InputError
from .mask_io import davis_palette

# suffix -> (container format, encoder, encoder options)
_H264 = ("libx264", {"preset": "veryfast", "crf": "23", "profile": "high"})
_VP9 = ("libvpx-vp9", {"crf": "32", "b": "0", "deadline": "good", "cpu-used": "5"})
FORMATS = {".mp4": ("mp4", *_H264), ".m4v": ("mp4", *_H264), ".mov": ("mov", *_H264), ".webm": ("webm", *_VP9)}
SIZE_TAG = "stmae-overlay original-size="


def check_overlay_path(path: str | Path) -> Path:
    """``path`` as a Path if it can take an overlay video (a browser-playable type, in an
    existing folder); InputError otherwise. Runs before any model is loaded."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"overlay {path}: unsupported video type {suffix or '(none)'}; use .mp4 (H.264) or .webm (VP9), "
            f"which browsers play"
        )
    if not path.parent.is_dir():
        raise InputError(f"overlay {path}: folder {path.parent} does not exist")
    return path


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) rounded up to even numbers: the size of an H.264 overlay of frames of ``size``."""
    return size[0] + size[0] % 2, size[1] + size[1] % 2


def blend(frame: np.ndarray, labels: np.ndarray, palette: list[int] | None = None, alpha: float = 0.5) -> np.ndarray:
    """frame (H, W, 3) uint8 RGB, labels (H, W) uint8 -> (H, W, 3) uint8 RGB: objects
    blended with their palette colour (``alpha`` of the colour), background unchanged."""
    colours = np.asarray(palette if palette is not None else davis_palette(), dtype=np.float32).reshape(-1, 3)
    tinted = (1 - alpha) * frame.astype(np.float32) + alpha * colours[labels]
    out = np.where((labels > 0)[..., None], tinted, frame.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class OverlayWriter:
    """Writes an overlay video. Use as a context manager: the file appears only when every
    frame was written (on an error the partial temp file is removed).

    ``with OverlayWriter(path, fps, (h, w), palette) as v: v.add(frame, labels)``: frames
    (H, W, 3) uint8 RGB with label maps (H, W) uint8, every frame of size (H, W).
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], palette: list[int] | None = None) -> None:
        self.path = check_overlay_path(path)
        try:
            import av
        except ImportError as exc:  # pragma: no cover - av is a dependency
            raise BackendUnavailable(f"overlay videos need PyAV ({exc}); pip install av") from None
        container_format, codec, options = FORMATS[self.path.suffix.lower()]
        self.palette, self.size, self.frames = palette, (int(size[0]), int(size[1])), 0
        self.coded_size = even_size(self.size) if codec == "libx264" else self.size
        remove_stale_temps(self.path.parent, self.path.name)
        self._target = AtomicPath(self.path)
        try:
            self._container = av.open(str(self._target.tmp), mode="w", format=container_format)
            self._container.metadata["comment"] = f"{SIZE_TAG}{self.size[1]}x{self.size[0]}"
            self._stream = self._container.add_stream(codec, rate=Fraction(float(fps)).limit_denominator(1001))
            self._stream.height, self._stream.width = self.coded_size
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = dict(options)
        except BaseException:
            self._target.abort()
            raise
        self._av = av

    def __enter__(self) -> "OverlayWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, frame: np.ndarray, labels: np.ndarray) -> None:
        if frame.shape[:2] != self.size:
            raise InputError(f"overlay {self.path}: frame of size {frame.shape[1]}x{frame.shape[0]} in a video of "
                             f"{self.size[1]}x{self.size[0]}")
        image = blend(frame, labels, self.palette)
        if self.coded_size != self.size:
            padded = np.zeros((*self.coded_size, 3), np.uint8)
            padded[: self.size[0], : self.size[1]] = image
            image = padded
        for packet in self._stream.encode(self._av.VideoFrame.from_ndarray(image, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Finish the video and move it into place."""
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._target.abort()
            raise
        self._target.commit()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # the partial file is removed either way
            pass
        finally:
            self._target.abort()


def probe_video(path: str | Path) -> dict:
    """Codec, coded size, frame count and recorded original size (W, H) of a video file,
    read back with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        comment = {k.lower(): v for k, v in container.metadata.items()}.get("comment", "")
        original = None
        if comment.startswith(SIZE_TAG):
            w, h = comment[len(SIZE_TAG):].split("x")
            original = (int(w), int(h))
        return {"codec": stream.codec_context.name, "width": stream.width, "height": stream.height,
                "frames": frames, "original_size": original}
