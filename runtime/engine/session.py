"""A video session: one video frame by frame, the one-stream use of the batched engine.

:class:`VideoSession` is :class:`runtime.engine.stream_engine.StreamEngine` with a single stream: the
schedule is :mod:`runtime.engine.schedule` (host), the work :mod:`runtime.engine.device_step` (device).

Schedule (the published validation loop when one mask is given at frame 0 and the video
is shorter than the working window):

- a frame with a mask: the given objects take their masks (one-hot); objects already
  known keep their prediction outside the given masks. The frame is written to memory
  permanently (key = its f16, values = its probabilities resized bilinearly to key size).
- any other frame t: coarse = top-k readout of memory with its f16; probabilities =
  the mask autoencoder; written to the working memory when (t - t0) % mem_every == 0,
  t0 = the first annotated frame (the oldest working frame is replaced when full).
- frames before the first mask: all background, nothing is computed.

An object introduced at frame t reads only memory written at or after t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..backends.base import Backend
from ..config import SessionConfig
from .stream_engine import EngineOptions, StageTimer, StreamEngine, StreamInput, StreamMemory
from ..errors import InputError
from ..io.frames import check_pixels
from ..io.mask_io import without_void
from .object_registry import ObjectRegistry
from .schedule import StreamSchedule
from .transforms import FrameGeometry


@dataclass(frozen=True)
class FrameResult:
    """The result of one frame.

    index: frame index in the session (0-based).
    labels: (H, W) uint8 label map at input size, with the user's label values.
    prob: (N+1, H, W) float32 probabilities at input size on the backend's device;
        channel 0 is the background, channel i is ``object_labels[i-1]`` (None when the
        session's engine options have ``keep_prob=False``, as ``stmae-segment`` uses).
    object_labels: the object labels in channel order (all objects known so far).
    memory_written: whether this frame was written to the memory bank.
    """

    index: int
    labels: np.ndarray
    prob: torch.Tensor | None
    object_labels: tuple[int, ...]
    memory_written: bool


def _check_frame(frame: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{type(frame).__name__} {getattr(frame, 'dtype', '')} {tuple(getattr(frame, 'shape', ()))}"
        raise InputError(f"frame {index} must be an (H, W, 3) uint8 RGB array, got {desc.strip()}")
    return frame


def _check_mask(mask: np.ndarray, shape: tuple[int, int], index: int) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise InputError(
            f"the mask for frame {index} must be an (H, W) integer label map, got "
            f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {tuple(getattr(mask, 'shape', ()))}"
        )
    if mask.shape != shape:
        raise InputError(
            f"the mask for frame {index} is {mask.shape[1]}x{mask.shape[0]} (WxH) but the frames are "
            f"{shape[1]}x{shape[0]}; give a mask of the frame's size"
        )
    if mask.dtype != np.uint8:
        if mask.min() < 0 or mask.max() > 255:
            raise InputError(f"the mask for frame {index} has labels outside 0..255")
        mask = mask.astype(np.uint8)
    return without_void(mask)  # 255 = void (DAVIS): not an object, its pixels background


def _given_objects(mask: np.ndarray, objects, index: int) -> list[int]:
    present = [int(v) for v in np.unique(mask) if v != 0]
    if objects is None:
        return present
    given = []
    for label in objects:
        if not isinstance(label, (int, np.integer)) or not 1 <= int(label) <= 255:
            raise InputError(f"object labels must be integers in 1..255, got {label!r}")
        if int(label) not in present:
            raise InputError(
                f"object {int(label)} was asked for at frame {index} but the mask has no "
                f"pixel with that label (labels present: {present or 'none'})"
            )
        if int(label) not in given:
            given.append(int(label))
    return given


def check_step_input(schedule: StreamSchedule, frame: np.ndarray, mask: np.ndarray | None = None,
                     objects=None) -> StreamInput:
    """Validate one frame of a stream (frame: (H, W, 3) uint8 numpy, or a uint8 tensor on
    the device; optional mask; the mask's labels to take) against its schedule;
    InputError says what is wrong. Returns the engine's input."""
    t = schedule.frame_index
    if isinstance(frame, torch.Tensor):  # decoded on the device (runtime.engine.gpu_decode)
        if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"frame {t} must be an (H, W, 3) uint8 RGB tensor, got {frame.dtype} {tuple(frame.shape)}")
    else:
        frame = _check_frame(frame, t)
    height, width = int(frame.shape[0]), int(frame.shape[1])
    check_pixels(width, height, f"frame {t}")
    geometry = schedule.geometry
    if geometry is not None and (height, width) != geometry.input_size:
        h0, w0 = geometry.input_size
        raise InputError(
            f"frame {t} is {width}x{height} (WxH) but the video's frames are {w0}x{h0}; "
            f"all frames of a video must have the same size"
        )
    given: list[int] = []
    if mask is None and objects is not None:
        raise InputError(f"objects {list(objects)} were given for frame {t} without a mask")
    if mask is not None:
        mask = _check_mask(mask, (height, width), t)
        given = _given_objects(mask, objects, t)
        if not given and len(schedule.registry) == 0:
            raise InputError(
                f"the mask for frame {t} has no object (every pixel is 0, the background, or 255, void); "
                f"give a mask with at least one labelled object"
            )
    return StreamInput(frame, mask if given else None, tuple(given))


class VideoSession:
    """Segments one video frame by frame with a bounded memory bank.

    backend: a :class:`runtime.backends.base.Backend`; config: the memory schedule and
    processing size; timer: optional hook timing the stages 'preprocess', 'key_encoder',
    'memory_readout', 'mask_autoencoder', 'postprocess' (benchmarks); options: how the
    engine runs (default: eager; :meth:`EngineOptions.fastest` for CUDA graphs). One
    session per video; frames must all have the same size. The one-stream use of
    :class:`runtime.engine.stream_engine.StreamEngine`.
    """

    def __init__(self, backend: Backend, config: SessionConfig | None = None, timer: StageTimer | None = None,
                 options: EngineOptions | None = None) -> None:
        self.backend = backend
        self.config = config or SessionConfig()
        self.engine = StreamEngine(backend, self.config, options, timer)
        self.timer = self.engine.timer
        self.device = self.engine.device
        self._stream = self.engine.add_stream("video")

    @property
    def _schedule(self) -> StreamSchedule:
        return self.engine.schedule(self._stream)

    @property
    def registry(self) -> ObjectRegistry:
        return self._schedule.registry

    @property
    def geometry(self) -> FrameGeometry | None:
        return self._schedule.geometry

    @property
    def frame_index(self) -> int:
        return self._schedule.frame_index

    @property
    def first_annotated(self) -> int | None:
        return self._schedule.first_annotated

    @property
    def memory(self) -> StreamMemory | None:
        """The memory of this video (None before the first mask)."""
        return self.engine.memory(self._stream)

    @property
    def object_labels(self) -> tuple[int, ...]:
        return self.registry.labels

    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: np.ndarray | None = None, objects=None) -> FrameResult:
        """Process the next frame.

        frame: (H, W, 3) uint8 RGB. mask: optional (H, W) label map (uint8, 0 =
        background) giving objects at this frame. objects: the labels of ``mask`` to
        take (None: every non-zero label); a label already known is re-annotated.
        """
        item = check_step_input(self._schedule, frame, mask, objects)
        result = self.engine.step({self._stream: item})[self._stream]
        return FrameResult(result.index, result.labels, result.prob, result.object_labels, result.memory_written)
