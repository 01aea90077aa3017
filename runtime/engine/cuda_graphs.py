"""CUDA: the device step compiled (torch.compile, inductor, ``freezing=True``) and captured
once per bucket shape in a ``torch.cuda.CUDAGraph``, then replayed every frame.

Per replay the host only fills pinned buffers (frames, write slot and frame index per
lane) that are copied asynchronously into the graph's static inputs; the label map comes
back through a pinned buffer with a non-blocking copy and an event, so a frame costs one
host synchronisation (the event), and the host can prepare the next frame before waiting
(:meth:`runtime.engine.stream_engine.StreamEngine.submit`). Two buffer sets alternate.

Frames with a given mask (annotations, streams joining) and frames whose bucket must grow
run the same step eagerly. A capture that fails (an operation that cannot be captured, a
compiler error) leaves the bucket eager, and the failure is recorded in
``StreamEngine.graph_reports``. Nothing here imports onnxruntime, TensorRT or ModelOpt.
"""

from __future__ import annotations

import time
from typing import Hashable

import torch

from stmae.readout import upsample_coarse

from ..backends.base import KeyFeatures
from .types import lane_inputs


class CompiledNetwork:
    """The torch backend's two network stages through ``torch.compile`` (inductor with
    ``freezing=True``: weights become constants, conv+BN folded). Same interface as the
    backend (``encode_key``, ``segment_logits``, ``segment``). channels_last: the model's
    weights are converted to NHWC (this changes ``backend.model`` in place)."""

    def __init__(self, backend, channels_last: bool = False) -> None:
        self.backend = backend
        self.device = backend.device
        self.precision = backend.precision
        self.name = backend.name
        model = backend.model
        if channels_last:
            model.to(memory_format=torch.channels_last)
        autocast = backend._autocast

        def encode(image):
            with autocast():
                return model.encode_key(image)

        def logits(image, f16, f8, f4, coarse):
            with autocast():
                coarse_up = upsample_coarse(coarse.float(), image.shape[-2:])
                embedding = model.encode_mask(image, f16, coarse_up)
                return model.decode(f16, f8, f4, embedding).float()

        options = {"freezing": True}
        self._encode = torch.compile(encode, dynamic=False, options=options)
        self._logits = torch.compile(logits, dynamic=False, options=options)

    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        return KeyFeatures(*self._encode(image))

    def segment_logits(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        return self._logits(image, features.f16, features.f8, features.f4, coarse)

    def segment(self, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor) -> torch.Tensor:
        return self.backend.segment(image, features, coarse)


def compiled_network(backend, channels_last: bool = False) -> CompiledNetwork:
    return CompiledNetwork(backend, channels_last)


class BucketGraph:
    """The captured step of one bucket state (lanes, slots, objects, groups fixed).

    Static inputs: ``frames`` (S, H, W, 3) uint8, ``write_slot`` (S,) int64 (T = the
    scratch slot), ``write_frame`` (S,) int64. Static outputs: ``out`` (S, N_max+1, H, W)
    float32 and ``labels`` (S, H, W) uint8. Replays mutate the bucket state in place.
    """

    def __init__(self, engine, bucket) -> None:
        state, step, dev = bucket.state, bucket.step, engine.device
        s = state.lanes
        h, w = step.geometry.input_size
        self.state = state
        self.frames = torch.zeros(s, h, w, 3, dtype=torch.uint8, device=dev)
        self.write_slot = torch.full((s,), state.slots, dtype=torch.int64, device=dev)
        self.write_frame = torch.full((s,), -1, dtype=torch.int64, device=dev)
        self.host_frames = [torch.zeros(s, h, w, 3, dtype=torch.uint8).pin_memory() for _ in range(2)]
        self.host_small = [torch.zeros(2, s, dtype=torch.int64).pin_memory() for _ in range(2)]
        self.host_labels = [torch.zeros(s, h, w, dtype=torch.uint8).pin_memory() for _ in range(2)]
        self.events = [torch.cuda.Event() for _ in range(2)]
        for event in self.events:
            event.record()
        self.flip = 0

        def body():
            return step.static_step(state, self.frames, self.write_slot, self.write_frame)

        start = time.perf_counter()
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(3):  # the first call compiles; every write goes to the scratch slot
                body()
        torch.cuda.current_stream(dev).wait_stream(side)
        torch.cuda.synchronize(dev)
        self.warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out, self.labels = body()
        torch.cuda.synchronize(dev)
        self.capture_s = time.perf_counter() - start

    def submit(self, frames: dict[int, object], slots: list[int], indices: list[int]) -> int:
        """Queue one replay: frames by lane (numpy (H, W, 3) uint8, or CUDA tensors), the
        write slot and frame index of every lane. Returns the buffer set to wait on."""
        buf = self.flip
        self.flip ^= 1
        self.events[buf].synchronize()  # this buffer set's previous copies are done
        host = self.host_frames[buf]
        on_device = {}
        for lane, frame in frames.items():
            if isinstance(frame, torch.Tensor):
                on_device[lane] = frame
            else:
                host[lane].numpy()[...] = frame
        small = self.host_small[buf]
        small[0] = torch.tensor(slots)
        small[1] = torch.tensor(indices)
        if len(on_device) < len(frames):
            self.frames.copy_(host, non_blocking=True)
        for lane, frame in on_device.items():
            self.frames[lane].copy_(frame)
        self.write_slot.copy_(small[0], non_blocking=True)
        self.write_frame.copy_(small[1], non_blocking=True)
        self.graph.replay()
        self.host_labels[buf].copy_(self.labels, non_blocking=True)
        self.events[buf].record()
        return buf

    def labels_of(self, buf: int):
        """Wait for a replay's label map (the one host synchronisation): (S, H, W) uint8."""
        self.events[buf].synchronize()
        return self.host_labels[buf].numpy().copy()


def _graph_for(engine, bucket):
    """The bucket's captured step, capturing it now if needed; None if capture failed."""
    state = bucket.state
    if bucket.graph is not None and bucket.graph.state is state:
        return bucket.graph
    shape = {"lanes": state.lanes, "height": bucket.step.geometry.input_size[0],
             "width": bucket.step.geometry.input_size[1], "objects": state.objects,
             "groups": state.groups, "slots": state.slots, "compile": engine.options.compile}
    try:
        bucket.graph = BucketGraph(engine, bucket)
    except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager
        bucket.graph = None
        bucket.graph_failed = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        engine.graph_reports.append({**shape, "fallback": f"eager ({bucket.graph_failed})"})
        return None
    engine.graph_reports.append({**shape, "compile_and_warmup_s": round(bucket.graph.warmup_s, 3),
                                 "capture_s": round(bucket.graph.capture_s, 3), "fallback": None})
    return bucket.graph


def submit_graphed(engine, bucket, items: list, lanes_of: dict[Hashable, int]):
    """Queue a replay of the bucket's graph for ``items`` [(stream, input, plan, _)];
    returns a callable giving the results (it waits for the label map), or None when
    the bucket cannot be captured (the caller steps it eagerly)."""
    graph = _graph_for(engine, bucket)
    if graph is None:
        return None
    slots, indices, by_lane = lane_inputs(bucket.state, items, lanes_of)
    frames = {lane: item.frame for lane, item in by_lane.items()}
    with engine.timer.stage("graph_step"):
        buf = graph.submit(frames, slots, indices)
        # The static output is overwritten by the next replay: copy it now (queued).
        out = graph.out.clone() if engine.options.keep_prob else None

    known = {stream: engine.schedule(stream).registry.labels for stream, *_ in items}

    def results():
        labels = graph.labels_of(buf)
        return {
            stream: engine._result(stream, plan, labels[lanes_of[stream]],
                                   None if out is None else out[lanes_of[stream]], known[stream])
            for stream, _, plan, _ in items
        }

    return results
