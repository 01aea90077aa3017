"""Live frame sources: network streams through FFmpeg (PyAV) and cameras (OpenCV V4L2).

- URLs ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``rtp://`` are
  opened with PyAV (``av``, which bundles FFmpeg with these protocols); RTSP goes over TCP.
- Cameras (``/dev/videoN`` or a camera index) are opened with OpenCV's V4L2 backend (the
  FFmpeg bundled with PyAV has no V4L2 input).

A source yields (H, W, 3) uint8 RGB frames as they are decoded; every frame must have the
size of the first. ``av`` and ``cv2`` are imported only when a source is opened.
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from ..errors import InputError

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp")
_CAMERA = re.compile(r"^/dev/video\d+$")


def is_live_input(text: str | None) -> bool:
    """A stream URL of a known scheme, or a /dev/videoN camera."""
    if not text:
        return False
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    return scheme in STREAM_SCHEMES or bool(_CAMERA.match(text))


class StreamSource:
    """A network stream decoded by PyAV. timeout: seconds to wait when opening and for
    each read before giving up (the stream is then treated as ended)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        try:
            import av
        except ImportError:
            raise InputError("live streams need PyAV: pip install av") from None
        self.url = url
        options = {"rtsp_transport": "tcp"} if url.lower().startswith("rtsp") else {}
        if url.lower().startswith("udp"):
            options.update({"fifo_size": "1000000", "overrun_nonfatal": "1"})
        try:
            self._container = av.open(url, options=options, timeout=(timeout, timeout))
        except (OSError, av.FFmpegError) as exc:
            raise InputError(f"cannot open the stream {url}: {exc}".splitlines()[0]) from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"the stream {url} has no video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.end_reason: str | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        """Decoded frames until the stream ends; a network error or a stall past the
        timeout also ends it (the reason is kept in ``end_reason``)."""
        import av

        try:
            for frame in self._container.decode(self._stream):
                yield frame.to_ndarray(format="rgb24")
            self.end_reason = "end of stream"
        except (OSError, av.FFmpegError) as exc:
            self.end_reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def close(self) -> None:
        self._container.close()


class CameraSource:
    """A camera read through OpenCV (V4L2 on Linux): ``/dev/videoN`` or an index."""

    def __init__(self, camera: int | str) -> None:
        import cv2

        self.url = camera if isinstance(camera, str) else f"camera {camera}"
        self._capture = cv2.VideoCapture(camera, cv2.CAP_V4L2) if hasattr(cv2, "CAP_V4L2") else cv2.VideoCapture(camera)
        if not self._capture.isOpened():
            raise InputError(f"cannot open {self.url}: no such camera, or it is busy (check ls /dev/video*)")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None

    def __iter__(self) -> Iterator[np.ndarray]:
        import cv2

        while True:
            ok, frame = self._capture.read()
            if not ok or frame is None:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._capture.release()


def open_live(input_text: str | None = None, camera: int | None = None, timeout: float = 10.0):
    """The source of ``--input URL|/dev/videoN`` or ``--camera N``."""
    if camera is not None:
        if camera < 0:
            raise InputError(f"--camera must be 0 or more, got {camera}")
        return CameraSource(camera)
    if input_text is None or not is_live_input(input_text):
        raise InputError(f"{input_text!r} is not a live source: give a {'/'.join(STREAM_SCHEMES[:4])}... URL or /dev/videoN")
    if _CAMERA.match(input_text):
        return CameraSource(input_text)
    return StreamSource(input_text, timeout)
