"""The host schedule and the device state it drives: the published slot policy (window
ring, permanent annotated frames, growth only on user events), and that reading the
device state equals the published readout over each object group's valid memory."""

import numpy as np
import torch

from runtime.config import SessionConfig
from runtime.engine.device_step import BucketState, DeviceStep
from runtime.engine.schedule import StreamSchedule
from runtime.engine.transforms import FrameGeometry
from stmae.readout import read_memory

C, H, W = 8, 3, 4
GEO = FrameGeometry.for_frame(H * 16, W * 16, -1)


def frame_data(seed: int, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, C, H, W, generator=g) * 3, torch.rand(1, n, H, W, generator=g)


def direct(query, frames, top_k):
    keys = torch.cat([k.flatten(2) for k, _ in frames], dim=2)
    values = torch.cat([v.flatten(2) for _, v in frames], dim=2)
    return read_memory(query, keys, values, top_k)


def mask_with(labels):
    return np.array(labels, np.uint8).reshape(1, -1)


def test_window_replaces_oldest_and_keeps_permanent():
    schedule = StreamSchedule(SessionConfig(mem_every=1, max_memory_frames=3))
    plans = [schedule.plan([1] if t == 0 else [], mask_with([1]) if t == 0 else None) for t in range(9)]
    assert schedule.permanent_frames == (0,) and schedule.working_frames == (6, 7, 8)
    assert schedule.used == schedule.capacity == 4
    # Slots are a prefix and reused in place: frame 4 replaced frame 1 (slot 1), ...
    assert [p.write_slot for p in plans] == [0, 1, 2, 3, 1, 2, 3, 1, 2]


def test_memory_every_and_frames_before_the_first_mask():
    schedule = StreamSchedule(SessionConfig(mem_every=5, max_memory_frames=20))
    plans = [schedule.plan([3] if t == 2 else [], mask_with([3]) if t == 2 else None) for t in range(14)]
    assert [p.compute for p in plans[:3]] == [False, False, True]
    assert [p.index for p in plans if p.written] == [2, 7, 12]  # counted from the first mask
    assert plans[2].permanent and not plans[7].permanent


def test_extra_annotated_frame_grows_once_and_keeps_full_window():
    schedule = StreamSchedule(SessionConfig(mem_every=1, max_memory_frames=2))
    schedule.plan([1], mask_with([1]))
    schedule.plan([], None)
    schedule.plan([], None)
    plan = schedule.plan([2], mask_with([2]))  # a new object's mask at frame 3
    assert plan.permanent and plan.old_objects == 1 and schedule.capacity == 4
    schedule.plan([], None)
    assert schedule.permanent_frames == (0, 3) and schedule.working_frames == (2, 4)
    assert [(g.since, g.slots) for g in schedule.groups()] == [(0, (0,)), (3, (1,))]


def write(step, state, schedule, plan, key, values):
    prob = torch.cat([1 - values.sum(1, keepdim=True), values], dim=1)
    if values.shape[1] < state.objects:
        prob = torch.cat([prob, torch.zeros(1, state.objects - values.shape[1], H, W)], dim=1)
    step.write(state, key, prob, torch.tensor([plan.write_slot]), torch.tensor([plan.index]))


def test_object_introduced_later_reads_only_later_memory():
    schedule = StreamSchedule(SessionConfig(mem_every=1, max_memory_frames=5))
    state = BucketState(1, 6, 2, 2, C, (H, W), torch.float32, torch.device("cpu"))
    step = DeviceStep(None, GEO, top_k=30)
    data = [frame_data(0, 1), frame_data(1, 1), frame_data(2, 2), frame_data(3, 2)]
    for t, (k, v) in enumerate(data):
        given = [1] if t == 0 else [2] if t == 2 else []
        plan = schedule.plan(given, mask_with(given) if given else None)
        state.set_objects(0, schedule.registry.labels, schedule.groups())
        write(step, state, schedule, plan, k, v)
    query, _ = frame_data(50)
    pad = torch.zeros(1, 1, H, W)
    (k0, v0), (k1, v1), (k2, v2), (k3, v3) = data
    v0f, v1f = torch.cat([v0, pad], 1), torch.cat([v1, pad], 1)
    for top_k in (30, 4):
        step.top_k = top_k
        got = step.read(state, query, None, all_valid=False)
        old = direct(query, [(k0, v0f), (k1, v1f), (k2, v2), (k3, v3)], top_k)[:, :1]
        new = direct(query, [(k2, v2), (k3, v3)], top_k)[:, 1:]
        torch.testing.assert_close(got[:, :1], old, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[:, 1:], new, rtol=1e-6, atol=1e-6)
        wrong = direct(query, [(k0, v0f), (k1, v1f), (k2, v2), (k3, v3)], top_k)[:, 1:]
        assert not torch.allclose(wrong, new, atol=1e-4)  # the check can fail


def test_read_after_window_wraps_equals_published_readout():
    schedule = StreamSchedule(SessionConfig(mem_every=1, max_memory_frames=2))
    state = BucketState(1, 3, 2, 1, C, (H, W), torch.bfloat16, torch.device("cpu"))
    step = DeviceStep(None, GEO, top_k=5)
    written = [frame_data(t) for t in range(5)]
    for t, (k, v) in enumerate(written):
        plan = schedule.plan([1, 2] if t == 0 else [], mask_with([1, 2]) if t == 0 else None)
        if t == 0:
            state.set_objects(0, schedule.registry.labels, schedule.groups())
        write(step, state, schedule, plan, k, v)
    assert state.keys.dtype == torch.bfloat16 and state.values.dtype == torch.float32
    query, _ = frame_data(99)
    memory = [(k.bfloat16().float(), v) for k, v in (written[0], written[3], written[4])]
    want = direct(query, memory, 5)
    for width, all_valid in ((None, False), (3, True)):
        got = step.read(state, query, width, all_valid)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
