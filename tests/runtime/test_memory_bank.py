"""The memory bank: slots, window replacement, no growth, per-object validity, and that
reading equals the published readout over the (valid) memory frames."""

import pytest
import torch

from runtime.memory_bank import MemoryBank
from runtime.object_registry import ObjectGroup
from stmae.readout import read_memory

C, H, W = 8, 3, 4


def frame_data(seed: int, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, C, H, W, generator=g) * 3, torch.rand(1, n, H, W, generator=g)


def direct(query, frames, top_k):
    """stmae's read_memory over the concatenated memory frames [(key, values), ...]."""
    keys = torch.cat([k.flatten(2) for k, _ in frames], dim=2)
    values = torch.cat([v.flatten(2) for _, v in frames], dim=2)
    return read_memory(query, keys, values, top_k)


def test_window_replaces_oldest_and_keeps_permanent():
    bank = MemoryBank(C, (H, W), max_working_frames=3, device="cpu")
    bank.write(*frame_data(0), frame=0, permanent=True)
    for t in range(1, 9):
        bank.write(*frame_data(t), frame=t)
    assert bank.permanent_frames == (0,)
    assert bank.working_frames == (6, 7, 8)
    assert bank.used == bank.capacity == 4


def test_no_growth_after_window_fills():
    bank = MemoryBank(C, (H, W), max_working_frames=4, device="cpu")
    bank.write(*frame_data(0), frame=0, permanent=True)
    sizes = []
    keys_ptr = bank.keys.data_ptr()
    for t in range(1, 60):
        bank.write(*frame_data(t), frame=t)
        sizes.append(bank.allocated_bytes)
    assert len(set(sizes)) == 1
    assert bank.keys.data_ptr() == keys_ptr  # written in place, never reallocated


def test_extra_annotated_frame_grows_once_and_keeps_full_window():
    bank = MemoryBank(C, (H, W), max_working_frames=2, device="cpu")
    bank.write(*frame_data(0), frame=0, permanent=True)
    bank.write(*frame_data(1), frame=1)
    bank.write(*frame_data(2), frame=2)
    bank.write(*frame_data(3, n=3), frame=3, permanent=True)  # a new object's mask
    bank.write(*frame_data(4, n=3), frame=4)
    assert bank.permanent_frames == (0, 3)
    assert bank.working_frames == (2, 4)
    assert bank.capacity == 4
    assert bank.values.shape[0] >= 3


@pytest.mark.parametrize("top_k", [30, 5, None])
def test_read_equals_published_readout(top_k):
    bank = MemoryBank(C, (H, W), max_working_frames=2, device="cpu")
    written = [frame_data(t) for t in range(5)]
    bank.write(*written[0], frame=0, permanent=True)
    for t in range(1, 5):
        bank.write(*written[t], frame=t)
    query, _ = frame_data(99)
    k = top_k or 10_000
    got = bank.read(query, [ObjectGroup(0, (0, 1))], k)
    # Memory = frame 0 and the last two working frames, in any order.
    want = direct(query, [written[0], written[3], written[4]], top_k)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert got.dtype == torch.float32


def test_object_introduced_later_reads_only_later_memory():
    bank = MemoryBank(C, (H, W), max_working_frames=5, device="cpu")
    k0, v0 = frame_data(0, n=1)
    bank.write(k0, v0, frame=0, permanent=True)
    k1, v1 = frame_data(1, n=1)
    bank.write(k1, v1, frame=1)
    k2, v2 = frame_data(2, n=2)  # object 2 introduced at frame 2
    bank.write(k2, v2, frame=2, permanent=True)
    k3, v3 = frame_data(3, n=2)
    bank.write(k3, v3, frame=3)
    query, _ = frame_data(50)
    groups = [ObjectGroup(0, (0,)), ObjectGroup(2, (1,))]
    for top_k in (30, 4):
        got = bank.read(query, groups, top_k)
        pad = torch.zeros(1, 1, H, W)
        v0f, v1f = torch.cat([v0, pad], 1), torch.cat([v1, pad], 1)
        old = direct(query, [(k0, v0f), (k1, v1f), (k2, v2), (k3, v3)], top_k)[:, :1]
        new = direct(query, [(k2, v2), (k3, v3)], top_k)[:, 1:]
        torch.testing.assert_close(got[:, :1], old, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[:, 1:], new, rtol=1e-6, atol=1e-6)
        # Reading all memory for the new object would differ (the check can fail).
        wrong = direct(query, [(k0, v0f), (k1, v1f), (k2, v2), (k3, v3)], top_k)[:, 1:]
        assert not torch.allclose(wrong, new, atol=1e-4)


def test_half_precision_keys_are_stored_in_their_dtype():
    bank = MemoryBank(C, (H, W), max_working_frames=2, device="cpu", key_dtype=torch.bfloat16)
    k, v = frame_data(0)
    bank.write(k, v, frame=0, permanent=True)
    assert bank.keys.dtype == torch.bfloat16 and bank.values.dtype == torch.float32
    out = bank.read(k, [ObjectGroup(0, (0, 1))], 30)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_writes_and_empty_read():
    bank = MemoryBank(C, (H, W), max_working_frames=2, device="cpu")
    with pytest.raises(RuntimeError, match="empty"):
        bank.read(torch.zeros(1, C, H, W), [ObjectGroup(0, (0,))], 30)
    with pytest.raises(ValueError, match="does not fit"):
        bank.write(torch.zeros(1, C, H + 1, W), torch.zeros(1, 1, H + 1, W), frame=0)
