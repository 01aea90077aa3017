"""VideoSession: equal to the stage-by-stage published loop (real DAVIS frames, a
published-format checkpoint), the window, resizing, objects added later, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.backends import TorchBackend, create_backend
from runtime.config import SessionConfig
from runtime.errors import InputError
from runtime.io.frames import FrameFolder
from runtime.io.mask_io import read_mask
from runtime.engine.session import VideoSession
from stmae import generate_clip

from ..reference_loop import reference_probs


def run_session(backend, frames, mask0, config):
    session = VideoSession(backend, config)
    results = [session.step(f, mask0 if t == 0 else None) for t, f in enumerate(frames)]
    return session, results


def davis_crop(davis, seq="bear", count=8):
    """Real 240p frames of ``seq`` cropped to 100x150 around the object (pads to 112x160)."""
    folder = FrameFolder(davis / "JPEGImages" / "240p" / seq)
    frames = []
    for i, (_, frame) in enumerate(folder):
        if i == count:
            break
        frames.append(frame[90:190, 80:230])
    mask0, _ = read_mask(davis / "Annotations" / "240p" / seq / "00000.png")
    return np.stack(frames), mask0[90:190, 80:230]


def test_session_equals_published_loop_on_davis(davis, published_checkpoint, reference_model):
    frames, mask0 = davis_crop(davis)
    assert mask0.any()
    backend = create_backend("torch", checkpoint=published_checkpoint, device="cpu")
    session, results = run_session(backend, frames, mask0, SessionConfig(size=-1))
    want = reference_probs(reference_model, frames, mask0)
    assert session.memory.frames == (0, 5)
    for t, (res, ref) in enumerate(zip(results, want)):
        assert res.prob.shape == ref.shape == (2, 100, 150)
        err = (res.prob - ref).abs().max().item()
        assert err < 1e-5, f"frame {t}: max abs difference {err}"
        assert np.array_equal(res.labels, ref.argmax(0).numpy().astype(np.uint8))
    assert np.array_equal(results[0].labels, mask0)
    assert [r.memory_written for r in results] == [True, False, False, False, False, True, False, False]


def test_window_and_resize_equal_reference(small_model):
    clip = generate_clip(frames=12, height=50, width=70, objects=2, seed=5)
    backend = TorchBackend(small_model)
    config = SessionConfig(mem_every=2, top_k=7, max_memory_frames=2, size=32)
    session, results = run_session(backend, clip.frames, clip.masks[0], config)
    # 50x70 -> shorter side 32: 32x45, padded to 32x48.
    assert session.geometry.resized_size == (32, 45)
    want = reference_probs(small_model, clip.frames, clip.masks[0], mem_every=2, top_k=7,
                           window=2, resized=(32, 45))
    for res, ref in zip(results, want):
        torch.testing.assert_close(res.prob, ref, rtol=1e-5, atol=1e-5)
    assert session.memory.permanent_frames == (0,)
    assert session.memory.working_frames == (8, 10)


def test_memory_stops_growing(small_model):
    clip = generate_clip(frames=40, height=32, width=48, objects=1, seed=1)
    session = VideoSession(TorchBackend(small_model), SessionConfig(mem_every=2, max_memory_frames=3, size=-1))
    sizes = []
    for t, frame in enumerate(clip.frames):
        session.step(frame, clip.masks[0] if t == 0 else None)
        sizes.append(session.memory.allocated_bytes)
    assert len(set(sizes)) == 1
    assert session.memory.used == 4
    assert session.memory.working_frames == (34, 36, 38)


def test_objects_added_later_non_contiguous_labels(small_model):
    clip = generate_clip(frames=8, height=48, width=64, objects=2, seed=2)
    relabel = np.array([0, 9, 200], np.uint8)
    masks = relabel[clip.masks]
    first = np.where(masks[0] == 9, 9, 0).astype(np.uint8)
    session = VideoSession(TorchBackend(small_model), SessionConfig(size=-1, mem_every=5))
    r0 = session.step(clip.frames[0], first)
    assert r0.object_labels == (9,) and np.array_equal(r0.labels, first)
    session.step(clip.frames[1])
    late = np.where(masks[2] == 200, 200, 0).astype(np.uint8)
    r2 = session.step(clip.frames[2], late)
    assert r2.object_labels == (9, 200)
    assert np.all(r2.labels[late == 200] == 200)  # the given mask is the output there
    assert set(np.unique(r2.labels)) <= {0, 9, 200}
    assert session.memory.permanent_frames == (0, 2)
    groups = session.registry.groups()
    assert [(g.since, g.slots) for g in groups] == [(0, (0,)), (2, (1,))]
    r3 = session.step(clip.frames[3])
    assert r3.prob.shape == (3, 48, 64)
    torch.testing.assert_close(r3.prob.sum(0), torch.ones(48, 64), rtol=1e-5, atol=1e-5)
    assert set(np.unique(r3.labels)) <= {0, 9, 200}


def test_frames_before_first_mask_are_background(small_model):
    clip = generate_clip(frames=3, height=32, width=32, objects=1, seed=0)
    session = VideoSession(TorchBackend(small_model), SessionConfig(size=-1))
    r0 = session.step(clip.frames[0])
    assert not r0.labels.any() and r0.object_labels == () and session.memory is None
    r1 = session.step(clip.frames[1], clip.masks[1])
    assert np.array_equal(r1.labels, clip.masks[1]) and session.memory.permanent_frames == (1,)


def test_bad_input_messages(small_model):
    clip = generate_clip(frames=2, height=32, width=48, objects=1, seed=0)
    backend = TorchBackend(small_model)
    with pytest.raises(InputError, match="has no object"):
        VideoSession(backend).step(clip.frames[0], np.zeros((32, 48), np.uint8))
    with pytest.raises(InputError, match=r"mask for frame 0 is 40x30 \(WxH\) but the frames are 48x32"):
        VideoSession(backend).step(clip.frames[0], np.zeros((30, 40), np.uint8))
    with pytest.raises(InputError, match="no pixel with that label"):
        VideoSession(backend).step(clip.frames[0], clip.masks[0], objects=[5])
    with pytest.raises(InputError, match=r"uint8 RGB"):
        VideoSession(backend).step(clip.frames[0].astype(np.float32), clip.masks[0])
    session = VideoSession(backend, SessionConfig(size=-1))
    session.step(clip.frames[0], clip.masks[0])
    with pytest.raises(InputError, match=r"frame 1 is 40x32 \(WxH\) but the video's frames are 48x32"):
        session.step(clip.frames[1][:, :40].copy())


def test_config_validation():
    for kwargs, field in [({"mem_every": 0}, "mem_every"), ({"top_k": -1}, "top_k"),
                          ({"max_memory_frames": 0}, "max_memory_frames"), ({"size": 8}, "size")]:
        with pytest.raises(ValueError, match=field):
            SessionConfig(**kwargs)


def test_objects_without_mask_are_refused(small_model):
    clip = generate_clip(frames=1, height=32, width=32, objects=1, seed=0)
    with pytest.raises(InputError, match="without a mask"):
        VideoSession(TorchBackend(small_model)).step(clip.frames[0], objects=[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16/bf16 convolutions need a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cuda(small_model, precision):
    clip = generate_clip(frames=8, height=64, width=96, objects=2, seed=6)
    config = SessionConfig(size=-1)
    full = TorchBackend(small_model, device="cuda", precision="fp32")
    half = TorchBackend(small_model, device="cuda", precision=precision)
    _, ref = run_session(full, clip.frames, clip.masks[0], config)
    session, got = run_session(half, clip.frames, clip.masks[0], config)
    assert session.memory.keys.dtype == (torch.float16 if precision == "fp16" else torch.bfloat16)
    for a, b in zip(got, ref):
        assert a.prob.dtype == torch.float32 and torch.isfinite(a.prob).all()
        assert (a.prob - b.prob).abs().max().item() < 0.1
