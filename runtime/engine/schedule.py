"""The host schedule: the Python policy of one stream (video), kept off the device.

For each frame of a stream it decides, without reading anything back from the device:

- whether the network runs at all (frames before the first mask are background);
- which objects the frame introduces or re-annotates (their masks are the output there);
- whether the frame is written to memory, and into which memory slot:
  annotated frames are *permanent* (never replaced), every ``mem_every``-th frame counted
  from the first annotated frame goes to the bounded *working window* (a ring: the oldest
  working frame's slot is reused once the window is full);
- when the stream's slot table must grow (an annotated frame arriving when every slot is
  taken: user-driven and rare, never per frame).

This is exactly the published schedule of :class:`runtime.engine.session.VideoSession` (memory
every 5 frames, permanent annotated frames, a bounded working window, top-k 30). The device
step (:mod:`runtime.engine.device_step`) only ever sees the outcome as small index/value tensors:
a write slot and frame index per stream, each slot's frame index and validity, and each
object group's introduction frame. An object introduced at frame t reads only memory
written at or after t, so objects are grouped by introduction frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import SessionConfig
from .object_registry import ObjectGroup, ObjectRegistry
from .transforms import FrameGeometry


@dataclass(frozen=True)
class FramePlan:
    """What one stream does at one frame (decided on the host before the device step).

    index: the frame index in the stream; compute: whether the network runs (False: the
    frame is background, no object is known yet); old_objects: objects known before this
    frame (their predictions are kept outside given masks); given: labels whose masks this
    frame gives (new or re-annotated), with ``mask`` the (H, W) uint8 label map;
    write_slot: the memory slot the frame goes to (None: not written); permanent: an
    annotated frame (never replaced).
    """

    index: int
    compute: bool
    old_objects: int
    given: tuple[int, ...]
    mask: np.ndarray | None
    write_slot: int | None
    permanent: bool

    @property
    def written(self) -> bool:
        return self.write_slot is not None


class StreamSchedule:
    """The schedule of one stream: its objects, its frame counter and its slot table.

    Slots hold memory frames; the used slots always form a prefix ``[0, used)`` (slots are
    taken lowest first and only ever reused in place), so an eager step may read just that
    prefix. ``capacity`` starts at ``permanent_capacity + max_memory_frames``.
    """

    def __init__(self, config: SessionConfig, permanent_capacity: int = 1) -> None:
        self.config = config
        self.registry = ObjectRegistry()
        self.geometry: FrameGeometry | None = None
        self.frame_index = 0
        self.first_annotated: int | None = None
        self.capacity = max(permanent_capacity, 1) + config.max_memory_frames
        self.slot_frame: list[int] = []
        self.slot_permanent: list[bool] = []

    # ---- inspection -------------------------------------------------------------------
    @property
    def used(self) -> int:
        return len(self.slot_frame)

    @property
    def permanent_frames(self) -> tuple[int, ...]:
        return tuple(sorted(f for f, p in zip(self.slot_frame, self.slot_permanent) if p))

    @property
    def working_frames(self) -> tuple[int, ...]:
        return tuple(sorted(f for f, p in zip(self.slot_frame, self.slot_permanent) if not p))

    def groups(self) -> list[ObjectGroup]:
        return self.registry.groups()

    def all_slots_valid(self, slots: int) -> bool:
        """True when this stream has every slot of ``[0, slots)`` filled and all its
        objects may read all of them (one group, introduced no later than every slot)."""
        groups = self.registry.groups()
        return (
            self.used == slots
            and len(groups) == 1
            and min(self.slot_frame, default=-1) >= groups[0].since
        )

    # ---- the policy -------------------------------------------------------------------
    def _slot_for(self, permanent: bool) -> int:
        """The published slot policy (as the former MemoryBank): a working frame replaces
        the oldest working frame when the window is full; otherwise the next free slot;
        growing (keeping room for a full window) only when every slot is taken."""
        working = self.slot_permanent.count(False)
        if not permanent and working >= self.config.max_memory_frames:
            candidates = [s for s, p in enumerate(self.slot_permanent) if not p]
            return min(candidates, key=lambda s: self.slot_frame[s])
        if self.used == self.capacity:
            permanent_after = self.slot_permanent.count(True) + (1 if permanent else 0)
            needed = permanent_after + self.config.max_memory_frames
            self.capacity += max(needed - self.capacity, 1)
        return self.used

    def plan(self, given: list[int] | tuple[int, ...], mask: np.ndarray | None) -> FramePlan:
        """Decide the next frame (inputs already validated: ``given`` are the labels of
        ``mask`` to take). Commits the decision: the registry, first annotated frame, slot
        table and frame counter are updated; ``capacity`` may grow (the caller grows the
        device tensors to match)."""
        t = self.frame_index
        old = len(self.registry)
        self.frame_index += 1
        if old == 0 and not given:
            return FramePlan(t, False, 0, (), None, None, False)
        if given:
            self.registry.add(list(given), t)
            if self.first_annotated is None:
                self.first_annotated = t
        permanent = bool(given)
        written = permanent or (t - self.first_annotated) % self.config.mem_every == 0
        slot = None
        if written:
            slot = self._slot_for(permanent)
            if slot == self.used:
                self.slot_frame.append(t)
                self.slot_permanent.append(permanent)
            else:
                self.slot_frame[slot] = t
                self.slot_permanent[slot] = permanent
        return FramePlan(t, True, old, tuple(int(g) for g in given), mask if given else None, slot, permanent)
