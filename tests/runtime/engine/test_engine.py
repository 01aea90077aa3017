"""The batched engine equals each video run alone (CPU, fp32): streams of different
lengths and object counts, an object introduced later, streams joining a running batch and
leaving it (their lane reused), a working window that wraps around, two frame sizes; the
masked batched readout equals the published readout over the valid memory only."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from runtime.backends import TorchBackend
from runtime.config import SessionConfig
from runtime.engine.device_step import readout
from runtime.engine.stream_engine import EngineOptions, StreamEngine
from runtime.engine.session import VideoSession, check_step_input
from stmae import generate_clip
from stmae.readout import read_memory

CONFIG = SessionConfig(mem_every=2, top_k=7, max_memory_frames=2, size=-1)


def video(frames, objects, seed, height=32, width=48, late=None):
    """(frames, masks per frame index): the first mask at frame 0; ``late`` = (frame,
    label): that object is held back and introduced with its own mask at that frame."""
    clip = generate_clip(frames=frames, height=height, width=width, objects=objects, seed=seed)
    first = clip.masks[0].copy()
    masks = {0: first}
    if late is not None:
        frame, label = late
        first[first == label] = 0
        masks[frame] = np.where(clip.masks[frame] == label, label, 0).astype(np.uint8)
    return clip.frames, masks


def alone(backend, frames, masks, config=CONFIG):
    session = VideoSession(backend, config)
    return [session.step(f, masks.get(t)) for t, f in enumerate(frames)]


def assert_same(got, want, name):
    assert got.index == want.index
    assert got.object_labels == want.object_labels, name
    assert got.memory_written == want.memory_written, name
    torch.testing.assert_close(got.prob, want.prob, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
    differ = got.labels != want.labels
    if differ.any():  # only where two channels tie within float noise
        top2 = torch.topk(want.prob, 2, dim=0).values
        margin = (top2[0] - top2[1]).cpu().numpy()
        assert margin[differ].max() < 1e-4, f"{name}: labels differ at {differ.sum()} pixels"


def test_on_the_cpu_streams_with_the_same_objects_equal_each_alone_bit_for_bit(small_model):
    """The networks run lane by lane on the CPU (DeviceStep.lane_by_lane), so a stream's
    probabilities do not depend on which streams share its step: exactly equal, not just
    close (a batched convolution's blocking differs from a single frame's on the CPU)."""
    backend = TorchBackend(small_model)
    videos = {"a": video(8, 2, seed=3), "b": video(8, 2, seed=4), "c": video(6, 2, seed=5)}
    want = {name: alone(backend, *v) for name, v in videos.items()}
    engine = StreamEngine(backend, CONFIG)
    for name in videos:
        engine.add_stream(name)
    got = {name: [] for name in videos}
    for t in range(8):
        inputs = {n: check_step_input(engine.schedule(n), f[t], m.get(t)) for n, (f, m) in videos.items() if t < len(f)}
        for n, result in engine.step(inputs).items():
            got[n].append(result)
    for name in videos:
        for g, w in zip(got[name], want[name]):
            assert torch.equal(g.prob, w.prob), f"stream {name} frame {g.index}: probabilities differ"
            assert np.array_equal(g.labels, w.labels)


def test_batched_streams_equal_each_video_alone(small_model):
    backend = TorchBackend(small_model)
    videos = {
        "a": video(9, 1, seed=1),
        "b": video(5, 3, seed=2),                       # short, leaves early
        "c": video(10, 2, seed=3, late=(3, 2)),         # object 2 introduced at its frame 3
        "d": video(6, 2, seed=4),                       # joins late, takes b's lane
        "e": video(7, 1, seed=5, height=40, width=40),  # another frame size: another bucket
    }
    start = {"a": 0, "b": 0, "c": 2, "d": 6, "e": 1}
    want = {name: alone(backend, *v) for name, v in videos.items()}
    engine = StreamEngine(backend, CONFIG)
    got = {name: [] for name in videos}
    for step in range(14):
        inputs = {}
        for name, (frames, masks) in videos.items():
            t = step - start[name]
            if t == 0:
                engine.add_stream(name)
            if 0 <= t < len(frames):
                inputs[name] = check_step_input(engine.schedule(name), frames[t], masks.get(t))
        for name, result in engine.step(inputs).items():
            got[name].append(result)
        for name, (frames, _) in videos.items():
            if step - start[name] == len(frames) - 1:
                engine.remove_stream(name)
    for name in videos:
        assert len(got[name]) == len(want[name])
        for g, w in zip(got[name], want[name]):
            assert_same(g, w, f"stream {name} frame {g.index}")
    # b left before d joined: d reused its lane, so the bucket kept three lanes.
    bucket = engine._buckets[next(iter(engine._buckets))]
    assert bucket.state.lanes == 3
    # c's window wrapped: 2 working frames + 2 permanent ones (frames 0 and 3).
    assert want["c"][-1].object_labels == (1, 2)


def test_state_is_fixed_and_written_in_place(small_model):
    backend = TorchBackend(small_model)
    engine = StreamEngine(backend, CONFIG)
    clips = [video(12, 2, seed=s) for s in (7, 8)]
    for name in ("x", "y"):
        engine.add_stream(name)
    pointers = set()
    for t in range(12):
        engine.step({name: check_step_input(engine.schedule(name), frames[t], masks.get(t))
                     for name, (frames, masks) in zip(("x", "y"), clips)})
        state = next(iter(engine._buckets.values())).state
        pointers.add((state.keys.data_ptr(), state.values.data_ptr(), state.slot_valid.data_ptr()))
    assert len(pointers) == 1
    memory = engine.memory("x")
    assert memory.permanent_frames == (0,) and memory.working_frames == (8, 10)
    assert state.keys.shape == (2, small_model.config.key_channels[0], (1 + 2 + 1) * 2 * 3)


def test_masked_readout_equals_readout_over_valid_memory():
    g = torch.Generator().manual_seed(0)
    s, c, t, p, n, m = 2, 8, 4, 6, 3, 5
    keys = torch.randn(s, c, t * p, generator=g) * 3
    values = torch.rand(s, n, t * p, generator=g)
    query = torch.randn(s, c, m, generator=g) * 3
    # lane 0: group 0 reads slots 0-2, group 1 reads slot 2 only; lane 1: one group, slots 1, 3.
    valid = torch.tensor([[[1, 1, 1, 0], [0, 0, 1, 0]], [[0, 1, 0, 1], [0, 0, 0, 0]]], dtype=torch.bool)
    group = torch.tensor([[0, 1, 1], [0, 0, 0]])
    got = readout(query, keys, values, valid, group, top_k=7)
    for lane in range(s):
        for obj in range(n):
            slots = valid[lane, group[lane, obj]].nonzero().flatten().tolist()
            cols = torch.cat([torch.arange(sl * p, (sl + 1) * p) for sl in slots])
            ref = read_memory(query[lane : lane + 1, :, :, None], keys[lane : lane + 1, :, cols],
                              values[lane : lane + 1, obj : obj + 1, cols], top_k=7)
            torch.testing.assert_close(got[lane, obj], ref.flatten(), rtol=1e-5, atol=1e-6)
    # A group with nothing valid reads zeros, not NaN.
    empty = readout(query, keys, values, torch.zeros_like(valid), group, top_k=7)
    assert torch.equal(empty, torch.zeros_like(empty))


def test_padded_slots_and_prefix_counts_read_as_the_unpadded_memory(monkeypatch):
    """The readout of the engine's padded layout (6 key positions in slots of 8; the
    padding holds keys that would win every top-k if they were read) equals the readout
    of the unpadded memory, and each group passes its count of readable positions (up to
    its last valid slot; 0 for a group with none) as an (S,) int32 tensor."""
    import runtime.engine.device_step as device_step

    calls = []
    real_topk = device_step.topk_readout

    def spy(*args, **kwargs):
        calls.append(kwargs.get("lengths"))
        return real_topk(*args, **kwargs)

    monkeypatch.setattr(device_step, "topk_readout", spy)
    g = torch.Generator().manual_seed(1)
    s, c, t, p, stride, n, m = 2, 8, 4, 6, 8, 3, 5
    keys = torch.randn(s, c, t, p, generator=g) * 3
    values = torch.rand(s, n, t, p, generator=g)
    query = torch.randn(s, c, m, generator=g) * 3
    padded_keys = (query.mean(dim=2, keepdim=True)[..., None] * 100).expand(s, c, t, stride).clone()
    padded_keys[..., :p] = keys
    padded_values = torch.full((s, n, t, stride), 7.0)
    padded_values[..., :p] = values
    real = torch.arange(stride) < p
    valid = torch.tensor([[[1, 1, 1, 0], [0, 0, 1, 0]], [[0, 1, 0, 1], [0, 0, 0, 0]]], dtype=torch.bool)
    group = torch.tensor([[0, 1, 1], [0, 0, 0]])
    got = readout(query, padded_keys.flatten(2), padded_values.flatten(2), valid, group, 7, real)
    want = readout(query, keys.flatten(2), values.flatten(2), valid, group, 7)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    lengths = calls[:2]
    assert all(x.dtype == torch.int32 for x in lengths)
    assert [x.tolist() for x in lengths] == [[3 * stride, 4 * stride], [3 * stride, 0]]
    every = torch.ones(s, 1, t, dtype=torch.bool)
    torch.testing.assert_close(readout(query, padded_keys.flatten(2), padded_values.flatten(2), None, None, 7, real),
                               readout(query, keys.flatten(2), values.flatten(2), every, torch.zeros_like(group), 7),
                               rtol=1e-6, atol=1e-6)


def test_static_program_with_padded_memory_reads_only_valid_slots(small_model, monkeypatch):
    """The static program (what a CUDA graph captures) over memory slots padded to 16
    positions (as on CUDA: 2x3 = 6 key positions per frame here) gives each video's masks
    alone, keeps its shapes, and reads each lane only up to its last valid slot."""
    import runtime.engine.device_step as device_step

    calls = []
    real_topk = device_step.topk_readout

    def spy(query, keys, values, valid, top_k, **kwargs):
        calls.append((keys.shape[-1], kwargs.get("lengths")))
        return real_topk(query, keys, values, valid, top_k, **kwargs)

    monkeypatch.setattr(device_step, "topk_readout", spy)
    backend = TorchBackend(small_model)
    options = EngineOptions(cuda_graphs=True, memory_align=16)
    videos = {"a": video(8, 2, seed=41), "b": video(8, 1, seed=42)}
    want = {name: alone(backend, *v) for name, v in videos.items()}
    engine = StreamEngine(backend, CONFIG, options)
    got = {name: [] for name in videos}
    for name in videos:
        engine.add_stream(name)
    counts = []
    for t in range(8):
        calls.clear()
        used = [engine.schedule(name).used for name in videos]  # valid slots (a prefix) before the frame
        inputs = {name: check_step_input(engine.schedule(name), frames[t], masks.get(t))
                  for name, (frames, masks) in videos.items()}
        for name, result in engine.step(inputs).items():
            got[name].append(result)
        state = next(iter(engine._buckets.values())).state
        if t > 0:  # frame 0 is annotated: the static program runs from frame 1 on
            # Full-window shape, and each lane's count of valid slots as the readable prefix.
            assert [length for length, _ in calls] == [state.slots * 16]
            counts.append(calls[0][1].tolist())
            assert counts[-1] == [u * 16 for u in used]
    assert counts[0] == [16, 16] and counts[-1] == [48, 48] and state.slots == 3  # 1 then 3 of 3 slots
    for name in videos:
        for g, w in zip(got[name], want[name]):
            assert_same(g, w, f"stream {name} frame {g.index}")
    assert (state.stride, state.keys.stride(1) % 16, state.keys.shape[-1]) == (16, 0, (state.slots + 1) * 16)
    assert engine.memory("a").keys.shape == (small_model.config.key_channels[0], state.slots * 6)


def test_engine_options_validate():
    with pytest.raises(ValueError, match="lane_round"):
        EngineOptions(lane_round=0)
    with pytest.raises(ValueError, match="memory_align"):
        EngineOptions(memory_align=0)
    assert EngineOptions.fastest("cpu") == EngineOptions()
    assert EngineOptions.fastest("cuda").cuda_graphs
    assert EngineOptions().position_align("cpu") == 1 and EngineOptions().position_align("cuda") == 16
    assert EngineOptions(memory_align=8).position_align("cuda") == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("compile_", [False, True])
def test_cuda_graphs_equal_eager(small_model, compile_):
    backend = TorchBackend(small_model, device="cuda")
    videos = {"a": video(12, 2, seed=11, height=64, width=96), "b": video(9, 1, seed=12, height=64, width=96)}
    results = {}
    for graphs in (False, True):
        options = EngineOptions(cuda_graphs=graphs, compile=graphs and compile_)
        engine = StreamEngine(backend, CONFIG, options)
        out = {name: [] for name in videos}
        for name in videos:
            engine.add_stream(name)
        for t in range(12):
            inputs = {name: check_step_input(engine.schedule(name), frames[t], masks.get(t))
                      for name, (frames, masks) in videos.items() if t < len(frames)}
            for name, r in engine.step(inputs).items():
                out[name].append(r)
        results[graphs] = out
        if graphs:
            assert engine.graph_reports and engine.graph_reports[0]["fallback"] is None, engine.graph_reports
    for name in videos:
        for g, e in zip(results[True][name], results[False][name]):
            torch.testing.assert_close(g.prob, e.prob, rtol=1e-3, atol=1e-3)
            # Labels must agree wherever eager's two likeliest channels are more than 4e-3
            # apart. Closer than that, the reordered float sums of torch.compile's fusions
            # may flip the argmax: on an H200 0.23% of stream a's pixels flipped at 0.4303
            # vs 0.4315, and this random model's two objects tie on most of stream a.
            top2 = e.prob.float().topk(2, dim=0).values
            decided = ((top2[0] - top2[1]) > 4e-3).cpu().numpy()
            assert np.array_equal(g.labels[decided], e.labels[decided])


class SegmentOnly:
    """A backend like the exported ones: ``segment`` aggregates over every object given,
    no ``segment_logits`` (the engine then runs the mask autoencoder lane by lane)."""

    def __init__(self, backend):
        self.name, self.device, self.precision = "segment-only", backend.device, backend.precision
        self.encode_key, self.segment = backend.encode_key, backend.segment


def test_backend_without_logits_runs_lane_by_lane(small_model):
    backend = SegmentOnly(TorchBackend(small_model))
    assert not hasattr(backend, "segment_logits")
    videos = {"a": video(7, 1, seed=21), "b": video(7, 3, seed=22, late=(2, 3))}
    want = {name: alone(backend, *v) for name, v in videos.items()}
    engine = StreamEngine(backend, CONFIG)
    got = {name: [] for name in videos}
    for name in videos:
        engine.add_stream(name)
    for t in range(7):
        inputs = {name: check_step_input(engine.schedule(name), frames[t], masks.get(t))
                  for name, (frames, masks) in videos.items()}
        for name, result in engine.step(inputs).items():
            got[name].append(result)
    for name in videos:
        for g, w in zip(got[name], want[name]):
            assert_same(g, w, f"stream {name} frame {g.index}")


def test_static_program_with_padded_lanes_and_objects(small_model):
    """What a CUDA graph captures, run eagerly on the CPU (cuda_graphs=True): lanes and
    objects rounded up to powers of two (an idle lane, padding objects), room for two
    annotated frames, memory read at full capacity, scratch-slot writes."""
    backend = TorchBackend(small_model)
    options = EngineOptions(cuda_graphs=True, lane_round="pow2", object_round="pow2", permanent_capacity=2)
    videos = {"a": video(8, 3, seed=31), "b": video(8, 1, seed=32), "c": video(8, 2, seed=33, late=(4, 2))}
    want = {name: alone(backend, *v) for name, v in videos.items()}
    stages = []

    class Recorder:
        def stage(self, name):
            stages.append(name)
            return contextlib.nullcontext()

    engine = StreamEngine(backend, CONFIG, options, timer=Recorder())
    got = {name: [] for name in videos}
    for name in videos:
        engine.add_stream(name)
    for t in range(8):
        inputs = {name: check_step_input(engine.schedule(name), frames[t], masks.get(t))
                  for name, (frames, masks) in videos.items()}
        for name, result in engine.step(inputs).items():
            got[name].append(result)
    state = next(iter(engine._buckets.values())).state
    assert (state.lanes, state.objects, state.slots) == (4, 4, 2 + 2)
    assert stages.count("graph_step") == 6  # every frame but the two annotated ones
    for name in videos:
        for g, w in zip(got[name], want[name]):
            assert_same(g, w, f"stream {name} frame {g.index}")
