"""Object labels <-> tensor slots, and when each object was introduced.

Labels are the values of the user's label maps (1..255, not necessarily contiguous).
Slot i holds the object in probability channel i + 1 (channel 0 is the background) and in
row i of the memory values. An object introduced at frame t reads only memory written at
or after t, so objects are grouped by their introduction frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ObjectGroup:
    """Objects introduced at the same frame: they read the same memory positions.

    since: the introduction frame; slots: their slot indices (ascending)."""

    since: int
    slots: tuple[int, ...]


class ObjectRegistry:
    """Maps labels to slots (in order of introduction) and remembers introduction frames."""

    def __init__(self) -> None:
        self._labels: list[int] = []
        self._slot_of: dict[int, int] = {}
        self._since: list[int] = []

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label: object) -> bool:
        return label in self._slot_of

    @property
    def labels(self) -> tuple[int, ...]:
        """Labels in slot order: probability channel i + 1 is ``labels[i]``."""
        return tuple(self._labels)

    def slot(self, label: int) -> int:
        try:
            return self._slot_of[label]
        except KeyError:
            raise KeyError(f"object label {label} is not registered (known: {self._labels})") from None

    def introduced_at(self, label: int) -> int:
        return self._since[self.slot(label)]

    def add(self, labels: list[int] | tuple[int, ...], frame: int) -> list[int]:
        """Register the labels not known yet as introduced at ``frame``; returns their slots
        (known labels are left as they are)."""
        new_slots = []
        for label in labels:
            label = int(label)
            if not 1 <= label <= 255:
                raise ValueError(f"object labels must be in 1..255, got {label}")
            if label in self._slot_of:
                continue
            self._slot_of[label] = len(self._labels)
            self._labels.append(label)
            self._since.append(frame)
            new_slots.append(self._slot_of[label])
        return new_slots

    def groups(self) -> list[ObjectGroup]:
        """Objects grouped by introduction frame, earliest first."""
        by_frame: dict[int, list[int]] = {}
        for slot, since in enumerate(self._since):
            by_frame.setdefault(since, []).append(slot)
        return [ObjectGroup(since, tuple(slots)) for since, slots in sorted(by_frame.items())]

    def label_lookup(self) -> np.ndarray:
        """(N + 1,) uint8: channel index -> label value (0 for the background)."""
        return np.array([0, *self._labels], dtype=np.uint8)
