"""The batched multi-stream engine: S videos stepped together, one static-shape device step
per bucket, the schedule on the host.

- Host policy: :mod:`runtime.engine.schedule` (one :class:`StreamSchedule` per stream).
- Device step: :mod:`runtime.engine.device_step` (a :class:`BucketState` of fixed-capacity
  tensors per bucket, the batched readout, the mask autoencoder on all (lane, object)
  pairs, aggregation, memory write, label map).
- CUDA: :mod:`runtime.engine.cuda_graphs` compiles and captures the step once per bucket shape.

Streams with the same frame size share a bucket; each stream holds one lane of it while it
has objects. Streams join (:meth:`StreamEngine.add_stream`) and leave
(:meth:`StreamEngine.remove_stream`) at any frame; lanes freed by streams that left are
reused, and streams not stepped at a frame leave their lane idle (computed, ignored, not
written). :class:`runtime.engine.session.VideoSession` is this engine with one stream.
"""

from __future__ import annotations

import itertools
from typing import Hashable

import numpy as np
import torch

from ..config import SessionConfig
from .device_step import BucketState, DeviceStep, channel_argmax_batched
from .types import (
    EngineOptions, PendingStep, StageTimer, StreamInput, StreamMemory, StreamResult, _NoTimer, lane_inputs,
)
from ..errors import InputError
from .schedule import FramePlan, StreamSchedule
from .transforms import FrameGeometry

__all__ = ["StreamEngine", "EngineOptions", "StreamInput", "StreamResult", "StreamMemory", "PendingStep", "StageTimer"]


def _round_up(value: int, multiple: str | int) -> int:
    if multiple == "pow2":
        return 1 << max(value - 1, 0).bit_length()
    return -(-value // int(multiple)) * int(multiple)


class _Bucket:
    """Streams of one frame geometry: their lanes, the device state, the captured step."""

    def __init__(self, step: DeviceStep) -> None:
        self.step = step
        self.lanes: list[Hashable | None] = []
        self.state: BucketState | None = None
        self.graph = None  # runtime.engine.cuda_graphs.BucketGraph, once captured
        self.graph_failed: str | None = None

    def lane_of(self, stream: Hashable) -> int | None:
        return self.lanes.index(stream) if stream in self.lanes else None

    def assign(self, stream: Hashable) -> int:
        if None in self.lanes:
            lane = self.lanes.index(None)
            self.lanes[lane] = stream
        else:
            self.lanes.append(stream)
            lane = len(self.lanes) - 1
        if self.state is not None and lane < self.state.lanes:
            self.state.reset_lane(lane)
        return lane


class StreamEngine:
    """Segments several videos at once.

    backend: a runtime backend; config: the schedule and processing size of every stream;
    options: :class:`EngineOptions`; timer: optional stage timer (eager steps time
    'preprocess', 'key_encoder', 'memory_readout', 'mask_autoencoder', 'postprocess';
    graph replays time 'graph_step').
    """

    def __init__(self, backend, config: SessionConfig | None = None, options: EngineOptions | None = None,
                 timer: StageTimer | None = None) -> None:
        self.backend = backend
        self.config = config or SessionConfig()
        self.options = options or EngineOptions()
        self.timer: StageTimer = timer or _NoTimer()
        self.device = torch.device(backend.device)
        self._schedules: dict[Hashable, StreamSchedule] = {}
        self._bucket_of: dict[Hashable, _Bucket] = {}
        self._buckets: dict[FrameGeometry, _Bucket] = {}
        self._ids = itertools.count()
        self._network = backend
        self.graph_reports: list[dict] = []
        self._in_flight: list[PendingStep] = []
        if self.options.compile and self.device.type == "cuda" and hasattr(backend, "segment_logits"):
            from .cuda_graphs import compiled_network

            self._network = compiled_network(backend, self.options.channels_last)

    # ---- streams ----------------------------------------------------------------------
    def add_stream(self, stream: Hashable | None = None) -> Hashable:
        """Register a stream (a new id if None); it joins a bucket at its first mask."""
        stream = next(self._ids) if stream is None else stream
        if stream in self._schedules:
            raise ValueError(f"stream {stream!r} is already running")
        self._schedules[stream] = StreamSchedule(self.config, self.options.permanent_capacity)
        return stream

    @torch.inference_mode()
    def remove_stream(self, stream: Hashable) -> None:
        """The stream leaves: its lane is freed (and forgotten) for the next stream."""
        self._schedules.pop(stream)
        bucket = self._bucket_of.pop(stream, None)
        if bucket is not None:
            lane = bucket.lane_of(stream)
            bucket.lanes[lane] = None
            if bucket.state is not None and lane < bucket.state.lanes:
                bucket.state.reset_lane(lane)

    @property
    def streams(self) -> tuple[Hashable, ...]:
        return tuple(self._schedules)

    def schedule(self, stream: Hashable) -> StreamSchedule:
        return self._schedules[stream]

    def memory(self, stream: Hashable) -> StreamMemory | None:
        """The stream's memory, or None before it has any."""
        bucket = self._bucket_of.get(stream)
        if bucket is None or bucket.state is None:
            return None
        return StreamMemory(self._schedules[stream], bucket.state, bucket.lane_of(stream))

    # ---- stepping ---------------------------------------------------------------------
    def step(self, inputs: dict[Hashable, StreamInput]) -> dict[Hashable, StreamResult]:
        """Advance the given streams by one frame each (others stay where they are)."""
        return self.submit(inputs).wait()

    def submit(self, inputs: dict[Hashable, StreamInput]) -> "PendingStep":
        """Queue one frame of the given streams; ``.wait()`` gives the results. Under CUDA
        graphs the device works while the host prepares the next frame: submit frame t+1,
        then wait for frame t (results come back in submission order)."""
        # Graph replays alternate two pinned buffer sets: at most two steps in flight.
        self._in_flight = [p for p in self._in_flight if not p.done]
        while len(self._in_flight) >= 2:
            self._in_flight.pop(0).wait()
        with torch.inference_mode():
            pending = self._submit(inputs)
        if not pending.done:
            self._in_flight.append(pending)
        return pending

    def _submit(self, inputs: dict[Hashable, StreamInput]) -> "PendingStep":
        results: dict[Hashable, StreamResult] = {}
        pending = []
        work: dict[int, tuple[_Bucket, list]] = {}
        for stream, item in inputs.items():
            schedule = self._schedules.get(stream)
            if schedule is None:
                raise ValueError(f"unknown stream {stream!r}: add it with add_stream first")
            height, width = int(item.frame.shape[0]), int(item.frame.shape[1])
            if schedule.geometry is None:
                schedule.geometry = FrameGeometry.for_frame(height, width, self.config.size)
            elif (height, width) != schedule.geometry.input_size:
                h0, w0 = schedule.geometry.input_size
                raise InputError(f"frame {schedule.frame_index} of stream {stream!r} is {width}x{height} (WxH) "
                                 f"but its frames are {w0}x{h0}")
            before = (schedule.used, schedule.all_slots_valid(schedule.used), len(schedule.registry))
            plan = schedule.plan(item.given, item.mask)
            if not plan.compute:
                results[stream] = StreamResult(
                    stream, plan.index, np.zeros((height, width), np.uint8),
                    torch.ones(1, height, width, device=self.device) if self.options.keep_prob else None,
                    (), False,
                )
                continue
            bucket = self._bucket_for(stream, schedule.geometry)
            work.setdefault(id(bucket), (bucket, []))[1].append((stream, item, plan, before))
        for bucket, items in work.values():
            done = self._step_bucket(bucket, items)
            if callable(done):
                pending.append(done)
            else:
                results.update(done)
        return PendingStep(results, pending)

    def _bucket_for(self, stream: Hashable, geometry: FrameGeometry) -> _Bucket:
        bucket = self._bucket_of.get(stream)
        if bucket is None:
            bucket = self._buckets.get(geometry)
            if bucket is None:
                bucket = _Bucket(DeviceStep(self._network, geometry, self.config.top_k, self.options.channels_last))
                self._buckets[geometry] = bucket
            bucket.assign(stream)
            self._bucket_of[stream] = bucket
        return bucket

    def _needed_shape(self, bucket: _Bucket) -> tuple[int, int, int, int]:
        schedules = [self._schedules[s] for s in bucket.lanes if s is not None]
        lanes = _round_up(len(bucket.lanes), self.options.lane_round)
        slots = max(s.capacity for s in schedules)
        objects = _round_up(max(len(s.registry) for s in schedules), self.options.object_round)
        groups = max(len(s.groups()) for s in schedules)
        return lanes, slots, objects, groups

    def _ensure_state(self, bucket: _Bucket, f16: torch.Tensor) -> BucketState:
        lanes, slots, objects, groups = self._needed_shape(bucket)
        state = bucket.state
        if state is None:
            state = BucketState(lanes, slots, objects, groups, f16.shape[1], tuple(f16.shape[-2:]), f16.dtype,
                                self.device, self.options.position_align(self.device))
        elif (lanes, slots, objects, groups) != state.shape_key and (
            lanes > state.lanes or slots > state.slots or objects > state.objects or groups > state.groups
        ):
            state = state.grown(max(lanes, state.lanes), max(slots, state.slots),
                                max(objects, state.objects), max(groups, state.groups))
        if state is not bucket.state:
            bucket.state = state
            bucket.graph = None
        return state

    def _frames_batch(self, bucket: _Bucket, lanes: int, by_lane: dict[int, StreamInput]) -> torch.Tensor:
        geo = bucket.step.geometry
        if len(by_lane) == lanes == 1:
            frame = by_lane[0].frame
            return (torch.as_tensor(frame) if isinstance(frame, np.ndarray) else frame).to(self.device)[None]
        batch = torch.zeros((lanes, *geo.input_size, 3), dtype=torch.uint8, device=self.device)
        for lane, item in by_lane.items():
            batch[lane] = torch.as_tensor(item.frame).to(self.device) if isinstance(item.frame, np.ndarray) else item.frame
        return batch

    def _step_bucket(self, bucket: _Bucket, items: list) -> dict[Hashable, StreamResult]:
        timer, step = self.timer, bucket.step
        geo = step.geometry
        lanes_of = {stream: bucket.lane_of(stream) for stream, *_ in items}
        annotated = any(plan.given for _, _, plan, _ in items)
        state = bucket.state
        if (
            not annotated and state is not None and self.options.cuda_graphs
            and step.batched_objects and bucket.graph_failed is None
            and all(need <= have for need, have in zip(self._needed_shape(bucket), state.shape_key))
        ):
            if self.device.type == "cuda":
                from .cuda_graphs import submit_graphed

                pending = submit_graphed(self, bucket, items, lanes_of)
                if pending is not None:
                    return pending
            else:  # no CUDA: the same static program, run eagerly
                return self._static_step(bucket, items, lanes_of)
        lanes = max(_round_up(len(bucket.lanes), self.options.lane_round), state.lanes if state is not None else 0)
        by_lane = {lanes_of[s]: item for s, item, _, _ in items}
        with timer.stage("preprocess"):
            frames = self._frames_batch(bucket, lanes, by_lane)
            image = step.preprocess(frames)
        with timer.stage("key_encoder"):
            features = step.encode_key(image, sorted(by_lane))  # lane by lane on the CPU (DeviceStep.lane_by_lane)
        state = self._ensure_state(bucket, features.f16)
        s_lanes, n_max = state.lanes, state.objects
        old = [0] * s_lanes
        for stream, _, plan, _ in items:
            old[lanes_of[stream]] = plan.old_objects
        if any(old):
            static = self.options.cuda_graphs
            width = None if static else max(before[0] for *_, before in items)
            all_valid = (
                not static and len(items) == s_lanes
                and all(before[0] == width and before[1] and before[2] == n_max for *_, before in items)
            )
            all_real = all(n == n_max for n in old)
            with timer.stage("memory_readout"):
                coarse = step.read(state, features.f16, width, all_valid)
            with timer.stage("mask_autoencoder"):
                prob = step.segment(state, image, features, coarse, None if all_real else old, sorted(by_lane))
        else:
            prob = torch.zeros(s_lanes, n_max + 1, *image.shape[-2:], dtype=torch.float32, device=self.device)
            prob[:, 0] = 1.0
        for stream, _, plan, _ in items:
            schedule = self._schedules[stream]
            if len(schedule.registry) != plan.old_objects:
                state.set_objects(lanes_of[stream], schedule.registry.labels, schedule.groups())
        with timer.stage("postprocess"):
            out, labels = step.finish(state, prob)
        if annotated:
            with timer.stage("preprocess"):
                prob = prob.clone()
                out = out.clone()
                for stream, _, plan, _ in items:
                    if plan.given:
                        self._annotate(bucket, state, lanes_of[stream], plan, prob, out, labels)
        writes = [(lanes_of[s], plan) for s, _, plan, _ in items if plan.written]
        if writes:
            with timer.stage("memory_readout"):
                slot = [state.slots] * s_lanes
                frame = [-1] * s_lanes
                for lane, plan in writes:
                    slot[lane], frame[lane] = plan.write_slot, plan.index
                step.write(state, features.f16, prob,
                           torch.tensor(slot, dtype=torch.int64, device=self.device),
                           torch.tensor(frame, dtype=torch.int64, device=self.device))
        with timer.stage("postprocess"):
            labels_host = labels.cpu().numpy()
        return {
            stream: self._result(stream, plan, labels_host[lanes_of[stream]], out[lanes_of[stream]])
            for stream, _, plan, _ in items
        }

    def _static_step(self, bucket: _Bucket, items: list, lanes_of: dict) -> dict[Hashable, StreamResult]:
        """The captured program (:meth:`DeviceStep.static_step`) run eagerly: idle lanes
        compute and write to the scratch slot, memory is read at full capacity."""
        state = bucket.state
        slots, indices, by_lane = lane_inputs(state, items, lanes_of)
        with self.timer.stage("graph_step"):
            frames = self._frames_batch(bucket, state.lanes, by_lane)
            out, labels = bucket.step.static_step(
                state, frames, torch.tensor(slots, device=self.device), torch.tensor(indices, device=self.device))
            labels_host = labels.cpu().numpy()
        return {stream: self._result(stream, plan, labels_host[lanes_of[stream]], out[lanes_of[stream]])
                for stream, _, plan, _ in items}

    def _annotate(self, bucket: _Bucket, state: BucketState, lane: int, plan: FramePlan,
                  prob: torch.Tensor, out: torch.Tensor, labels: torch.Tensor) -> None:
        """Given masks at an annotated frame: the given objects take their masks, the other
        channels are scaled by (1 - their union); at processed size (what memory stores)
        and at input size with the exact masks (what is returned)."""
        geo = bucket.step.geometry
        registry = self._schedules[bucket.lanes[lane]].registry
        slots = [registry.slot(label) for label in plan.given]
        given_p = geo.prepare_masks(plan.mask, list(plan.given), self.device)[0]
        exact = (torch.as_tensor(plan.mask, device=self.device)[None] == torch.tensor(
            plan.given, dtype=torch.uint8, device=self.device).view(-1, 1, 1)).float()
        for target, given in ((prob[lane], given_p), (out[lane], exact)):
            union = given.sum(dim=0, keepdim=True).clamp_(max=1.0)
            target.mul_(1.0 - union)
            for j, slot in enumerate(slots):
                target[slot + 1] = given[j]
        index = channel_argmax_batched(out[lane : lane + 1])[0]
        labels[lane] = state.label_lookup[lane][index.long()]

    def _result(self, stream: Hashable, plan: FramePlan, labels: np.ndarray, out: torch.Tensor | None,
                labels_known: tuple[int, ...] | None = None) -> StreamResult:
        if labels_known is None:
            labels_known = self._schedules[stream].registry.labels
        prob = out[: len(labels_known) + 1] if self.options.keep_prob and out is not None else None
        return StreamResult(stream, plan.index, labels, prob, labels_known, plan.written)

