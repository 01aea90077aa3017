"""Configuration of a video session: frozen dataclasses that validate themselves."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MEM_EVERY = 5
DEFAULT_TOP_K = 30
# Working frames (besides the permanent annotated frames). DAVIS sequences have at most
# 104 frames, so with mem_every = 5 at most 20 working frames are ever written: at this
# default every DAVIS video follows the published validation schedule exactly.
DEFAULT_MAX_MEMORY_FRAMES = 20
DEFAULT_SIZE = 480
# The largest working size (shorter side, pixels): 8K UHD. A larger --size would upsample
# frames into a network input of gigabytes before anything useful happens.
MAX_SIZE = 4320


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class SessionConfig:
    """How a :class:`runtime.engine.session.VideoSession` schedules and reads its memory.

    mem_every: a frame is written to the working memory every ``mem_every`` frames,
        counted from the first annotated frame (published: 5).
    top_k: memory positions each query position reads (published: 30).
    max_memory_frames: the working window: at most this many written frames are kept
        besides the permanent (annotated) frames; the oldest is replaced first.
    size: frames are resized so that their shorter side is ``size`` pixels before the
        network (-1: as they are); results are resized back to the input size.
    """

    mem_every: int = DEFAULT_MEM_EVERY
    top_k: int = DEFAULT_TOP_K
    max_memory_frames: int = DEFAULT_MAX_MEMORY_FRAMES
    size: int = DEFAULT_SIZE

    def __post_init__(self) -> None:
        _positive_int("mem_every", self.mem_every)
        _positive_int("top_k", self.top_k)
        _positive_int("max_memory_frames", self.max_memory_frames)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not (
            self.size == -1 or 16 <= self.size <= MAX_SIZE
        ):
            raise ValueError(
                f"size must be -1 (frames as they are) or 16..{MAX_SIZE} pixels, got {self.size!r}"
            )
