"""The demo's overlay video: VP9 in WebM through PyAV, which browsers play.

Checked on this machine (PyAV 18.1 wheels with their own FFmpeg): libx264 encodes only
even frame sizes in yuv420p (427x240 fails), OpenCV's FFmpeg has no H.264 encoder (only
MPEG-4 Part 2, which browsers do not play); libvpx-vp9 writes any size, so the video is
exactly the clip's size. Written through stmae.atomic.AtomicPath: a temp file in the target
folder, renamed into place when complete; on an error the temp file is removed.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from runtime.errors import BackendUnavailable
from runtime.io.overlay import CommitOnExit, blend
from stmae.atomic import AtomicPath

CODEC = "libvpx-vp9"
SUFFIX = ".webm"


class BrowserVideoWriter(CommitOnExit):
    """``with BrowserVideoWriter(path, fps, (h, w)) as v: v.add(frame, labels)``: frames
    (H, W, 3) uint8 RGB with label maps (H, W) uint8 blended in, at exactly (H, W)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], palette: list[int] | None = None) -> None:
        try:
            import av
        except ImportError as exc:  # pragma: no cover - av is a dependency
            raise BackendUnavailable(f"the demo's overlay needs PyAV ({exc}); pip install av") from None
        self.path = Path(path)
        if self.path.suffix != SUFFIX:
            raise ValueError(f"overlay {self.path} must end in {SUFFIX} (VP9 in WebM)")
        self.size, self.palette, self.frames = size, palette, 0
        self._target = AtomicPath(self.path)
        try:
            self._container = av.open(str(self._target.tmp), mode="w", format="webm")
        except BaseException:
            self._target.abort()
            raise
        self._stream = self._container.add_stream(CODEC, rate=Fraction(fps).limit_denominator(1001))
        self._stream.height, self._stream.width = size
        self._stream.pix_fmt = "yuv420p"
        # Constant quality (crf) with no bitrate cap; 'good'-quality real-time speed.
        self._stream.options = {"crf": "32", "b": "0", "deadline": "good", "cpu-used": "5"}
        self._av = av

    def add(self, frame: np.ndarray, labels: np.ndarray) -> None:
        if frame.shape[:2] != self.size:
            raise ValueError(f"overlay frame {frame.shape[:2]} is not the video's size {self.size}")
        image = self._av.VideoFrame.from_ndarray(blend(frame, labels, self.palette), format="rgb24")
        for packet in self._stream.encode(image):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._target.commit()

    def abort(self) -> None:
        try:
            self._container.close()
        finally:
            self._target.abort()


def probe(path: str | Path) -> dict:
    """Codec, size and frame count of a video file, read back with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return {"codec": stream.codec_context.name, "width": stream.width, "height": stream.height, "frames": frames}
