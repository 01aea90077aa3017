"""What the batched engine takes and gives: its options, a stream's frame input and
result, a read-only view of a stream's memory, and a submitted step's pending results
(:mod:`runtime.engine.stream_engine` holds the engine itself)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Hashable, Protocol

import numpy as np
import torch

from .device_step import BucketState
from .schedule import StreamSchedule


class StageTimer(Protocol):
    """Optional per-stage timing hook (e.g. :class:`runtime.bench.stats.StageTimer`)."""

    def stage(self, name: str) -> ContextManager[None]: ...


class _NoTimer:
    def stage(self, name: str) -> ContextManager[None]:
        return contextlib.nullcontext()


@dataclass(frozen=True)
class EngineOptions:
    """How the device step runs.

    cuda_graphs: every shape static (memory read at full capacity, idle lanes computed)
        and, on CUDA with a backend that has ``segment_logits``, the step captured once
        per bucket shape and replayed (on the CPU the same program runs eagerly); compile: torch.compile
        the network stages first (inductor, ``freezing=True``); channels_last: NHWC
        convolution inputs; lane_round / object_round: round lanes (S) and objects
        (N_max) up, 1 (exact) or 'pow2' (fewer shapes to capture);
        permanent_capacity: annotated frames each stream has room for before its slot
        table grows; keep_prob: return each stream's probabilities (a copy under graphs);
        memory_align: the key positions of a memory slot are padded to a multiple of this
        (padding is never valid), so that memory row strides are multiples of 16 elements
        and the readout kernel loads key tiles with 16-byte vector loads; None: 16 on
        CUDA, 1 (no padding: no mask to apply in the CPU readout) elsewhere.
    """

    cuda_graphs: bool = False
    compile: bool = False
    channels_last: bool = False
    lane_round: str | int = 1
    object_round: str | int = 1
    permanent_capacity: int = 1
    keep_prob: bool = True
    memory_align: int | None = None

    def __post_init__(self) -> None:
        if self.memory_align is not None and (
            not isinstance(self.memory_align, int) or isinstance(self.memory_align, bool) or self.memory_align < 1
        ):
            raise ValueError(f"memory_align must be a positive integer or None, got {self.memory_align!r}")
        for name in ("lane_round", "object_round"):
            value = getattr(self, name)
            if value != "pow2" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or 'pow2', got {value!r}")
        if not isinstance(self.permanent_capacity, int) or self.permanent_capacity < 1:
            raise ValueError(f"permanent_capacity must be a positive integer, got {self.permanent_capacity!r}")

    def position_align(self, device: torch.device | str) -> int:
        """The memory slot padding in positions on ``device`` (see ``memory_align``)."""
        if self.memory_align is not None:
            return self.memory_align
        return 16 if torch.device(device).type == "cuda" else 1

    @classmethod
    def fastest(cls, device: torch.device | str, cuda_graphs: bool = True, compile: bool = True) -> "EngineOptions":
        """CUDA: graphs (+ torch.compile) and channels_last, shapes rounded to powers of
        two; elsewhere the eager defaults."""
        if torch.device(device).type != "cuda":
            return cls()
        return cls(cuda_graphs=cuda_graphs, compile=compile and cuda_graphs, channels_last=True,
                   lane_round="pow2", object_round="pow2", permanent_capacity=2)


@dataclass(frozen=True)
class StreamInput:
    """One stream's frame: frame (H, W, 3) uint8 RGB (numpy, or a torch tensor on the
    engine's device, e.g. decoded there); mask (H, W) uint8 label map or None; given: the
    labels of ``mask`` taken (already validated, see :func:`runtime.engine.session.check_step_input`)."""

    frame: np.ndarray | torch.Tensor
    mask: np.ndarray | None = None
    given: tuple[int, ...] = ()


@dataclass(frozen=True)
class StreamResult:
    """One stream's frame result: labels (H, W) uint8 with the user's label values; prob
    (N+1, H, W) float32 on the device (None when the engine does not keep them);
    object_labels in channel order; memory_written: the frame went to memory."""

    stream: Hashable
    index: int
    labels: np.ndarray
    prob: torch.Tensor | None
    object_labels: tuple[int, ...]
    memory_written: bool


class StreamMemory:
    """A read-only view of one stream's memory (slot table on the host, tensors on the
    device): frames, permanent_frames, working_frames, used, capacity, allocated_bytes,
    keys ((C, T*P) of its lane, in the key dtype, without the slots' layout padding)."""

    def __init__(self, schedule: StreamSchedule, state: BucketState, lane: int) -> None:
        self._schedule, self._state, self._lane = schedule, state, lane

    @property
    def frames(self) -> tuple[int, ...]:
        return tuple(self._schedule.slot_frame)

    @property
    def permanent_frames(self) -> tuple[int, ...]:
        return self._schedule.permanent_frames

    @property
    def working_frames(self) -> tuple[int, ...]:
        return self._schedule.working_frames

    @property
    def used(self) -> int:
        return self._schedule.used

    @property
    def capacity(self) -> int:
        return self._state.slots

    @property
    def allocated_bytes(self) -> int:
        return self._state.allocated_bytes // self._state.lanes

    @property
    def keys(self) -> torch.Tensor:
        return self._state.lane_keys(self._lane)


class PendingStep:
    """Results of a submitted frame: ready ones, and replays still running on the device."""

    def __init__(self, ready: dict[Hashable, StreamResult], pending: list) -> None:
        self._ready, self._pending = ready, pending

    @property
    def done(self) -> bool:
        return not self._pending

    def wait(self) -> dict[Hashable, StreamResult]:
        for finish in self._pending:
            self._ready.update(finish())
        self._pending = []
        return self._ready


def lane_inputs(state: BucketState, items: list, lanes_of: dict) -> tuple[list[int], list[int], dict]:
    """The static step's per-lane inputs for ``items`` [(stream, input, plan, _)]: the slot
    each lane writes (``state.slots``, the scratch slot, for idle lanes and frames not
    written to memory), the frame index it writes (-1: none), and each busy lane's input."""
    slots = [state.slots] * state.lanes
    indices = [-1] * state.lanes
    by_lane = {}
    for stream, item, plan, _ in items:
        lane = lanes_of[stream]
        by_lane[lane] = item
        if plan.written:
            slots[lane], indices[lane] = plan.write_slot, plan.index
    return slots, indices, by_lane
