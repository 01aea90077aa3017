"""The memory bank: keys and values of memory frames in preallocated device tensors.

Layout (P = h*w positions per frame, S = slots):

- ``keys``: (C, S*P) in the backend's key dtype (float32, or float16/bfloat16), on device.
- ``values``: (N_cap, S*P) float32 per-object probabilities at key size (row = object slot).

Written slots always form a prefix ``[0, used)``: the readout works on views of that prefix,
never on a concatenation. Slots are either *permanent* (annotated frames: never replaced)
or *working* (at most ``max_working_frames``; when the window is full the oldest working
frame's slot is overwritten). The readout is invariant to the order of memory positions,
so slot order does not matter. Capacity grows only when an annotated frame or an object is
added after the bank is full (user-driven, rare): per-frame writes never allocate.

Reading: similarity, top-k softmax and aggregation in float32 (:mod:`stmae.readout`). An
object introduced at frame t reads only slots written at or after t: objects are read in
groups by introduction frame, each over its valid positions (invalid positions are set to
-inf before the top-k, which is exactly a readout over the valid positions only).
"""

from __future__ import annotations

import torch

from stmae.readout import read_memory, similarity, topk_aggregate

from .object_registry import ObjectGroup


class MemoryBank:
    """Bounded memory of one video at one key size.

    key_channels: C (1024 for the published network); key_size: (h, w) of f16;
    max_working_frames: the working window; key_dtype: dtype of the stored keys;
    permanent_capacity / object_capacity: initial capacities (grown on demand).
    """

    def __init__(
        self,
        key_channels: int,
        key_size: tuple[int, int],
        max_working_frames: int,
        device: torch.device | str,
        key_dtype: torch.dtype = torch.float32,
        permanent_capacity: int = 1,
        object_capacity: int = 1,
    ) -> None:
        if max_working_frames < 1:
            raise ValueError(f"max_working_frames must be >= 1, got {max_working_frames}")
        self.key_channels = key_channels
        self.key_size = (int(key_size[0]), int(key_size[1]))
        self.positions = self.key_size[0] * self.key_size[1]
        self.max_working_frames = max_working_frames
        self.device = torch.device(device)
        self.key_dtype = key_dtype
        slots = max(permanent_capacity, 1) + max_working_frames
        self.keys = torch.zeros(key_channels, slots * self.positions, dtype=key_dtype, device=self.device)
        self.values = torch.zeros(
            max(object_capacity, 1), slots * self.positions, dtype=torch.float32, device=self.device
        )
        self._slot_frame: list[int] = []  # frame index of each used slot
        self._slot_permanent: list[bool] = []

    # ---- inspection -------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Number of frame slots allocated."""
        return self.keys.shape[1] // self.positions

    @property
    def used(self) -> int:
        """Number of slots holding a frame (a prefix of the slots)."""
        return len(self._slot_frame)

    @property
    def frames(self) -> tuple[int, ...]:
        """Frame index held by each used slot, in slot order."""
        return tuple(self._slot_frame)

    @property
    def permanent_frames(self) -> tuple[int, ...]:
        return tuple(sorted(f for f, p in zip(self._slot_frame, self._slot_permanent) if p))

    @property
    def working_frames(self) -> tuple[int, ...]:
        return tuple(sorted(f for f, p in zip(self._slot_frame, self._slot_permanent) if not p))

    @property
    def allocated_bytes(self) -> int:
        """Bytes held by the key and value tensors."""
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    # ---- writing ----------------------------------------------------------------------
    def _grow_slots(self, extra: int) -> None:
        cols = self.keys.shape[1] + extra * self.positions
        keys = torch.zeros(self.key_channels, cols, dtype=self.key_dtype, device=self.device)
        values = torch.zeros(self.values.shape[0], cols, dtype=torch.float32, device=self.device)
        keys[:, : self.keys.shape[1]] = self.keys
        values[:, : self.values.shape[1]] = self.values
        self.keys, self.values = keys, values

    def _grow_objects(self, rows: int) -> None:
        values = torch.zeros(rows, self.values.shape[1], dtype=torch.float32, device=self.device)
        values[: self.values.shape[0]] = self.values
        self.values = values

    def _slot_for(self, permanent: bool) -> int:
        working = self._slot_permanent.count(False)
        if not permanent and working >= self.max_working_frames:
            # Replace the oldest working frame.
            candidates = [s for s, p in enumerate(self._slot_permanent) if not p]
            return min(candidates, key=lambda s: self._slot_frame[s])
        if self.used == self.capacity:
            # Only an annotated frame (or a working frame while the window is not full,
            # after annotated frames took its room) can get here; grow, keeping room for
            # the full working window.
            permanent_after = self._slot_permanent.count(True) + (1 if permanent else 0)
            needed = permanent_after + self.max_working_frames
            self._grow_slots(max(needed - self.capacity, 1))
        self._slot_frame.append(-1)
        self._slot_permanent.append(permanent)
        return self.used - 1

    def write(self, key: torch.Tensor, values: torch.Tensor, frame: int, permanent: bool = False) -> int:
        """Store a frame. key: (1, C, h, w) f16 of the frame (any float dtype; stored in
        ``key_dtype``); values: (1, N, h, w) per-object probabilities at key size.
        Rows of objects beyond N are set to 0 for this frame. Returns the slot used."""
        if key.shape[-3:] != (self.key_channels, *self.key_size):
            raise ValueError(
                f"key {tuple(key.shape)} does not fit the bank ({self.key_channels}, "
                f"{self.key_size[0]}, {self.key_size[1]})"
            )
        if values.shape[-2:] != self.key_size:
            raise ValueError(f"values {tuple(values.shape)} are not at key size {self.key_size}")
        n = values.shape[-3]
        if n > self.values.shape[0]:
            self._grow_objects(max(n, 2 * self.values.shape[0]))
        slot = self._slot_for(permanent)
        cols = slice(slot * self.positions, (slot + 1) * self.positions)
        self.keys[:, cols] = key.reshape(self.key_channels, self.positions)
        self.values[:n, cols] = values.reshape(n, self.positions)
        self.values[n:, cols] = 0
        self._slot_frame[slot] = int(frame)
        self._slot_permanent[slot] = permanent
        return slot

    # ---- reading ----------------------------------------------------------------------
    def _valid_positions(self, since: int) -> torch.Tensor | None:
        """Bool (L,) of positions written at or after ``since``; None if all are."""
        valid_slots = [f >= since for f in self._slot_frame]
        if all(valid_slots):
            return None
        if not any(valid_slots):
            raise RuntimeError(f"no memory written at or after frame {since}")
        mask = torch.tensor(valid_slots, device=self.device)
        return mask.repeat_interleave(self.positions)

    def read(self, query_key: torch.Tensor, groups: list[ObjectGroup], top_k: int) -> torch.Tensor:
        """Coarse masks of a query frame.

        query_key: (1, C, h, w) f16 of the query frame; groups: the objects by introduction
        frame (:meth:`runtime.object_registry.ObjectRegistry.groups`), covering slots
        0..N-1. Returns (1, N, h, w) float32.
        """
        if self.used == 0:
            raise RuntimeError("the memory bank is empty: write the annotated frame first")
        n = sum(len(g.slots) for g in groups)
        length = self.used * self.positions
        keys = self.keys[:, :length].unsqueeze(0)
        values = self.values[:n, :length].unsqueeze(0)
        valid = [self._valid_positions(g.since) for g in groups]
        if all(v is None for v in valid):
            # Every object reads all of memory: the published readout, as it is.
            return read_memory(query_key, keys, values, top_k)
        h, w = query_key.shape[-2:]
        sim = similarity(keys, query_key.flatten(2))  # (1, M, L) float32
        out = torch.empty(1, n, h * w, dtype=torch.float32, device=self.device)
        for group, mask in zip(groups, valid):
            slots = torch.tensor(group.slots, device=self.device)
            group_values = values.float().index_select(1, slots)
            if mask is None:
                k, group_sim = top_k, sim
            else:
                k = min(top_k, int(mask.sum()))
                group_sim = sim.masked_fill(~mask.view(1, 1, -1), float("-inf"))
            out[:, slots] = topk_aggregate(group_sim, group_values, k)
        return out.view(1, n, h, w)
