"""A video session: the per-video state and the frame-by-frame ``step`` loop.

Schedule (the published validation loop when one mask is given at frame 0 and the video
is shorter than the working window):

- a frame with a mask: the given objects take their masks (one-hot); objects already
  known keep their prediction outside the given masks. The frame is written to memory
  permanently (key = its f16, values = its probabilities resized bilinearly to key size).
- any other frame t: coarse = top-k readout of memory with its f16; probabilities =
  ``backend.segment``; written to the working memory when (t - t0) % mem_every == 0,
  t0 = the first annotated frame (the oldest working frame is replaced when full).
- frames before the first mask: all background, nothing is computed.

An object introduced at frame t reads only memory written at or after t.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Protocol

import numpy as np
import torch

from stmae.readout import to_key_size

from .backends.base import Backend, KeyFeatures
from .config import SessionConfig
from .errors import InputError
from .memory_bank import MemoryBank
from .object_registry import ObjectRegistry
from .transforms import FrameGeometry, channel_argmax


@dataclass(frozen=True)
class FrameResult:
    """The result of one frame.

    index: frame index in the session (0-based).
    labels: (H, W) uint8 label map at input size, with the user's label values.
    prob: (N+1, H, W) float32 probabilities at input size on the backend's device;
        channel 0 is the background, channel i is ``object_labels[i-1]``.
    object_labels: the object labels in channel order (all objects known so far).
    memory_written: whether this frame was written to the memory bank.
    """

    index: int
    labels: np.ndarray
    prob: torch.Tensor
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
    return mask


def _with_given(
    prob: torch.Tensor | None, given: torch.Tensor, slots: list[int], channels: int
) -> torch.Tensor:
    """Combine predictions with given masks.

    prob: (1, N_old+1, H, W) predictions (or None: no earlier objects); given: (1, G, H, W)
    one-hot masks of the given objects, going to ``slots``; -> (1, channels, H, W): the given
    objects are their masks, every other channel is scaled by (1 - union of given masks).
    """
    union = given.sum(dim=1, keepdim=True).clamp_(max=1.0)
    out = torch.zeros(1, channels, *given.shape[-2:], dtype=torch.float32, device=given.device)
    if prob is None:
        out[:, :1] = 1.0 - union
    else:
        out[:, : prob.shape[1]] = prob * (1.0 - union)
    for j, slot in enumerate(slots):
        out[:, slot + 1] = given[:, j]
    return out


class StageTimer(Protocol):
    """Optional per-stage timing hook (e.g. :class:`runtime.bench.stats.StageTimer`)."""

    def stage(self, name: str) -> ContextManager[None]: ...


class _NoTimer:
    def stage(self, name: str) -> ContextManager[None]:
        return contextlib.nullcontext()


class VideoSession:
    """Segments one video frame by frame with a bounded memory bank.

    backend: a :class:`runtime.backends.base.Backend`; config: the memory schedule and
    processing size; timer: optional hook timing the stages 'preprocess', 'key_encoder',
    'memory_readout', 'mask_autoencoder', 'postprocess' (benchmarks). One session per
    video; frames must all have the same size.
    """

    def __init__(self, backend: Backend, config: SessionConfig | None = None, timer: StageTimer | None = None) -> None:
        self.backend = backend
        self.config = config or SessionConfig()
        self.timer: StageTimer = timer or _NoTimer()
        self.device = torch.device(backend.device)
        self.registry = ObjectRegistry()
        self.memory: MemoryBank | None = None
        self.geometry: FrameGeometry | None = None
        self.frame_index = 0
        self.first_annotated: int | None = None

    @property
    def object_labels(self) -> tuple[int, ...]:
        return self.registry.labels

    def _given_objects(self, mask: np.ndarray, objects, index: int) -> list[int]:
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

    @torch.inference_mode()
    def step(self, frame: np.ndarray, mask: np.ndarray | None = None, objects=None) -> FrameResult:
        """Process the next frame.

        frame: (H, W, 3) uint8 RGB. mask: optional (H, W) label map (uint8, 0 =
        background) giving objects at this frame. objects: the labels of ``mask`` to
        take (None: every non-zero label); a label already known is re-annotated.
        """
        t = self.frame_index
        frame = _check_frame(frame, t)
        height, width = frame.shape[:2]
        if self.geometry is None:
            self.geometry = FrameGeometry.for_frame(height, width, self.config.size)
        elif (height, width) != self.geometry.input_size:
            h0, w0 = self.geometry.input_size
            raise InputError(
                f"frame {t} is {width}x{height} (WxH) but the video's frames are {w0}x{h0}; "
                f"all frames of a video must have the same size"
            )
        given: list[int] = []
        if mask is None and objects is not None:
            raise InputError(f"objects {list(objects)} were given for frame {t} without a mask")
        if mask is not None:
            mask = _check_mask(mask, (height, width), t)
            given = self._given_objects(mask, objects, t)
            if not given and len(self.registry) == 0:
                raise InputError(
                    f"the mask for frame {t} has no object (every pixel is 0, the background); "
                    f"give a mask with at least one labelled object"
                )
        geo = self.geometry
        old = len(self.registry)
        if old == 0 and not given:
            self.frame_index += 1
            return FrameResult(
                t, np.zeros((height, width), np.uint8),
                torch.ones(1, height, width, device=self.device), (), False,
            )

        timer = self.timer
        with timer.stage("preprocess"):
            image = geo.prepare_image(frame, self.device)
        with timer.stage("key_encoder"):
            features: KeyFeatures = self.backend.encode_key(image)
        prob = None
        if old:
            with timer.stage("memory_readout"):
                coarse = self.memory.read(features.f16, self.registry.groups(), self.config.top_k)
            with timer.stage("mask_autoencoder"):
                prob = self.backend.segment(image, features, coarse)  # (1, old+1, Hp, Wp)
        with timer.stage("postprocess"):
            out = None if prob is None else geo.restore(prob)
        if given:
            with timer.stage("preprocess"):
                self.registry.add(given, t)
                if self.first_annotated is None:
                    self.first_annotated = t
                slots = [self.registry.slot(label) for label in given]
                channels = len(self.registry) + 1
                prob = _with_given(prob, geo.prepare_masks(mask, given, self.device), slots, channels)
                exact = torch.as_tensor(mask, device=self.device)[None] == torch.tensor(
                    given, dtype=torch.uint8, device=self.device
                ).view(-1, 1, 1)
                out = _with_given(out, exact.float()[None], slots, channels)

        written = bool(given) or (t - self.first_annotated) % self.config.mem_every == 0
        if written:
            with timer.stage("memory_readout"):
                self._write(features.f16, prob, t, permanent=bool(given))
        self.frame_index += 1
        with timer.stage("postprocess"):
            out = out[0]
            lookup = torch.as_tensor(self.registry.label_lookup(), device=self.device)
            labels = lookup[channel_argmax(out).long()].cpu().numpy()
        return FrameResult(t, labels, out, self.registry.labels, written)

    def _write(self, f16: torch.Tensor, prob: torch.Tensor, t: int, permanent: bool) -> None:
        key_size = tuple(f16.shape[-2:])
        if self.memory is None:
            self.memory = MemoryBank(
                key_channels=f16.shape[1],
                key_size=key_size,
                max_working_frames=self.config.max_memory_frames,
                device=self.device,
                key_dtype=f16.dtype,
                object_capacity=len(self.registry),
            )
        self.memory.write(f16, to_key_size(prob[:, 1:], key_size), t, permanent=permanent)
