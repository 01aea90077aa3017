"""Every stage of the network against the published code's outputs (the contract fixture).

The fixture: three 80x112 frames, two objects, weights by the contract's rule. Memory for
frame 1 is frame 0 (key + one-hot mask); for frame 2, frames 0 and 1 (frame 1's value is
its predicted foreground probabilities resized to key size).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stmae import modules
from stmae.aggregate import aggregate
from stmae.preprocess import normalize_image
from stmae.readout import read_memory, to_key_size, upsample_coarse

TOL = 1e-4


def rel_err(out: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.as_tensor(ref, dtype=torch.float64)
    out = out.detach().to(torch.float64)
    assert out.shape == ref_t.shape, (out.shape, ref_t.shape)
    assert torch.isfinite(out).all()
    return float((out - ref_t).norm() / ref_t.norm())


@torch.inference_mode()
def run_stages(model, io) -> dict[str, torch.Tensor]:
    """The published validation schedule on the fixture, stage by stage."""
    out: dict[str, torch.Tensor] = {}
    image = normalize_image(io["frames_rgb_uint8"])
    out["image_normalized"] = image
    feats = []
    for t in range(3):
        f16, f8, f4 = model.encode_key(image[t : t + 1])
        out[f"f16_{t}"], out[f"f8_{t}"], out[f"f4_{t}"] = f16, f8, f4
        feats.append((f16, f8, f4))
    mask0 = torch.as_tensor(io["mask0_index"]).long()
    onehot = torch.stack([(mask0 == i).float() for i in (1, 2)])[None]
    key_size = tuple(feats[0][0].shape[-2:])
    keys, values = [feats[0][0]], [to_key_size(onehot, key_size)]
    for t in (1, 2):
        mem_k = torch.cat([k.flatten(2) for k in keys], dim=2)
        mem_v = torch.cat([v.flatten(2) for v in values], dim=2)
        f16, f8, f4 = feats[t]
        out[f"readout_all_{t}"] = read_memory(f16, mem_k, mem_v, top_k=None)
        coarse = read_memory(f16, mem_k, mem_v, top_k=30)
        out[f"readout_top30_{t}"] = coarse
        coarse_up = upsample_coarse(coarse, image.shape[-2:])
        out[f"coarse_up_{t}"] = coarse_up
        emb = model.encode_mask(image[t : t + 1], f16, coarse_up)
        out[f"mask_embedding_{t}"] = emb
        logits = model.decode(f16, f8, f4, emb)
        out[f"object_logits_{t}"] = logits
        agg_logits, prob = aggregate(logits)
        out[f"aggregated_logits_{t}"] = agg_logits
        out[f"prob_with_background_{t}"] = prob
        keys.append(f16)
        values.append(to_key_size(prob[:, 1:], key_size))
    return out


def stage_errors(model, io) -> dict[str, float]:
    outs = run_stages(model, io)
    return {name: rel_err(outs[name], io[name]) for name in outs}


def test_every_stage_matches_fixture(reference_model, fixture_io):
    errors = stage_errors(reference_model, fixture_io)
    expected = {k for k in fixture_io if k not in ("frames_rgb_uint8", "mask0_index")}
    assert set(errors) == expected
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, f"stages over {TOL} relative error: {bad}"


def test_segment_is_the_mask_autoencoder(reference_model, fixture_io):
    """STMAE.segment (what is exported) equals the stage-by-stage path for frame 1."""
    outs = run_stages(reference_model, fixture_io)
    image = outs["image_normalized"][1:2]
    with torch.inference_mode():
        prob = reference_model.segment(
            image, outs["f16_1"], outs["f8_1"], outs["f4_1"], outs["readout_top30_1"]
        )
    assert rel_err(prob, fixture_io["prob_with_background_1"]) < TOL


# --- The fixture would catch a changed operation -------------------------------------
# (The relu/maxpool order of the mask encoder is not among these: relu is monotonic, so
# maxpool(relu(x)) == relu(maxpool(x)) exactly and no numerical test can tell them apart.)


def _cbam_spatial_first(self, x):
    return self.ChannelGate(self.SpatialGate(x))


def _spatial_gate_mean_first(self, x):
    compressed = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    return x * torch.sigmoid(self.spatial(compressed))


def _upsample_align_corners(g, scale):
    b, n = g.shape[:2]
    out = F.interpolate(g.flatten(0, 1), scale_factor=float(scale), mode="bilinear", align_corners=True)
    return out.view(b, n, *out.shape[1:])


def _fusion_without_residual_attention(self, x, g):
    b, n = g.shape[:2]
    g = self.block1(torch.cat([x.unsqueeze(1).expand(-1, n, -1, -1, -1), g], dim=2))
    r = self.attention(g.flatten(0, 1)).view(b, n, *g.shape[2:])
    return self.block2(r)


@pytest.mark.parametrize(
    "target, attr, replacement",
    [
        (modules.CBAM, "forward", _cbam_spatial_first),
        (modules.SpatialGate, "forward", _spatial_gate_mean_first),
        (modules, "upsample_groups", _upsample_align_corners),
        (modules.FeatureFusionBlock, "forward", _fusion_without_residual_attention),
    ],
    ids=["cbam-order", "spatial-gate-concat-order", "align-corners", "fusion-residual"],
)
def test_fixture_catches_changed_operation(reference_model, fixture_io, monkeypatch, target, attr, replacement):
    monkeypatch.setattr(target, attr, replacement)
    errors = stage_errors(reference_model, fixture_io)
    assert max(errors.values()) > 10 * TOL, errors


def test_fixture_catches_missing_others_channel(reference_model, fixture_io, monkeypatch):
    import stmae.network as network

    monkeypatch.setattr(network, "others_channel", lambda masks: torch.zeros_like(masks))
    errors = stage_errors(reference_model, fixture_io)
    assert errors["mask_embedding_1"] > 10 * TOL
