"""Normalization, pad/unpad, config validation and the synthetic clip generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stmae import ClipSpec, ModelConfig, STMAE, generate_clip, preset
from stmae.preprocess import normalize_image, pad_to_multiple, padding_for, unpad


def test_normalize_matches_fixture(fixture_io):
    out = normalize_image(fixture_io["frames_rgb_uint8"])
    assert out.shape == (3, 3, 80, 112) and out.dtype == torch.float32
    assert torch.allclose(out, torch.as_tensor(fixture_io["image_normalized"]), atol=1e-6)


def test_normalize_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        normalize_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        normalize_image(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize(
    "h, w, expected",
    [(80, 112, (0, 0, 0, 0)), (240, 427, (2, 3, 0, 0)), (481, 854, (5, 5, 7, 8)), (17, 33, (7, 8, 7, 8))],
)
def test_padding_puts_the_larger_half_after(h, w, expected):
    pad = padding_for(h, w)
    assert (pad.left, pad.right, pad.top, pad.bottom) == expected
    x = torch.arange(h * w, dtype=torch.float32).view(1, h, w) + 1
    padded, pad2 = pad_to_multiple(x)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert pad2 == pad
    assert torch.equal(unpad(padded, pad), x)
    assert padded.double().sum() == x.double().sum()  # zero padding (float64: exact for these integers)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="key_backbone='vgg16'"):
        ModelConfig(key_backbone="vgg16")
    with pytest.raises(ValueError, match="value_dim must be a positive integer"):
        ModelConfig(value_dim=0)
    with pytest.raises(ValueError, match="divisible by cbam_reduction"):
        ModelConfig(value_dim=100)
    with pytest.raises(ValueError, match="unknown model config fields"):
        ModelConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    cfg = preset("small")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AttributeError):
        cfg.value_dim = 3  # frozen


def test_small_preset_same_api_far_fewer_flops():
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, 64, 96)

    def flops(model):
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            f16, f8, f4 = model.encode_key(x)
            out = model.segment(x, f16, f8, f4, torch.rand(1, 2, 4, 6))
        assert out.shape == (1, 3, 64, 96)
        return counter.get_total_flops()

    assert flops(STMAE(preset("small")).eval()) * 4 < flops(STMAE(preset("published")).eval())


def test_synthetic_clip_is_seeded_exact_and_occludes():
    spec = ClipSpec(frames=16, height=64, width=96, objects=3, seed=5)
    clip = generate_clip(spec)
    again = generate_clip(spec)
    assert clip.frames.shape == (16, 64, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (16, 64, 96) and clip.masks.dtype == np.uint8
    assert np.array_equal(clip.frames, again.frames) and np.array_equal(clip.masks, again.masks)
    assert not np.array_equal(clip.frames, generate_clip(spec, seed=6).frames)
    assert set(np.unique(clip.masks[0])) == {0, 1, 2, 3}
    areas = np.array([[(m == i).sum() for i in (1, 2, 3)] for m in clip.masks])
    # The occluded object (2) loses most of its area mid-clip, then comes back.
    assert areas[:, 1].min() < 0.5 * areas[0, 1] and areas[-1, 1] > 0.5 * areas[0, 1]
    # Objects move and change scale.
    assert not np.array_equal(clip.masks[0], clip.masks[-1])
    assert areas[-1, 2] != areas[0, 2]


def test_synthetic_spec_validation():
    with pytest.raises(ValueError, match="frames must be >= 1"):
        ClipSpec(frames=0)
    with pytest.raises(ValueError, match="objects must be in 1..254"):
        ClipSpec(objects=0)
