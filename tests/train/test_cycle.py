"""The cycle step is the network's own math; the reference-frame rule; the loss."""

from __future__ import annotations

import pytest
import torch

from stmae import STMAE, preset
from stmae.readout import read_memory, to_key_size, upsample_coarse
from train.cycle import CycleModel, reference_frames
from train.loss import cycle_loss, dice_loss, labels_from_masks


@pytest.fixture(scope="module")
def net() -> STMAE:
    torch.manual_seed(0)
    return STMAE(preset("small")).eval()


def _inputs(t=3, n=2, h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(1, t, 3, h, w, generator=g)
    labels = torch.randint(0, n + 1, (1, h, w), generator=g)
    masks = torch.stack([(labels == i + 1).float() for i in range(n)], 1)
    return frames, masks, torch.ones(1, n, dtype=torch.bool)


def test_reference_frames_rule():
    assert reference_frames(4, 3) == [1, 2, 3]  # T-1 <= R: all of them
    assert reference_frames(2, 3) == [1]
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        refs = reference_frames(8, 3, g)
        assert len(refs) == 3 and refs[-1] == 7 and len(set(refs)) == 3
        assert all(1 <= r <= 6 for r in refs[:-1]) and refs == sorted(refs)
        seen.update(refs[:-1])
    assert len(seen) > 3  # random, not fixed
    with pytest.raises(ValueError):
        reference_frames(1, 3)


def test_cycle_equals_the_network_stages(net):
    """T = 3 rebuilt by hand from the stage API: forward 1, 2; backward 0 from refs."""
    frames, masks, valid = _inputs()
    with torch.no_grad():
        out = CycleModel(net)(frames, masks, valid, torch.tensor([1, 2]))
        f = [net.encode_key(frames[:, i]) for i in range(3)]
        size = f[0][0].shape[-2:]
        values = [to_key_size(masks, size)]
        for i in (1, 2):
            keys = torch.stack([f[j][0] for j in range(i)], 2).flatten(2)
            vals = torch.stack(values, 2).flatten(2)
            coarse = read_memory(f[i][0], keys, vals, top_k=None)
            prob = net.segment(frames[:, i], *f[i], coarse)
            values.append(to_key_size(prob[:, 1:], size))
        keys = torch.stack([f[1][0], f[2][0]], 2).flatten(2)
        vals = torch.stack(values[1:], 2).flatten(2)
        coarse0 = read_memory(f[0][0], keys, vals, top_k=None)
        emb = net.encode_mask(frames[:, 0], f[0][0], upsample_coarse(coarse0, (32, 48)))
        expected_logits, expected_prob = net.aggregate(net.decode(*f[0], emb))
    assert torch.allclose(out.prob, expected_prob, atol=1e-5)
    assert torch.allclose(out.agg_logits, expected_logits, atol=1e-4)


def test_only_the_backward_step_carries_gradients(net):
    frames, masks, valid = _inputs()
    model = CycleModel(net)
    out = model(frames, masks, valid, torch.tensor([1, 2]))
    assert out.prob.requires_grad
    cycle_loss(out.agg_logits, out.prob, masks, valid).total.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    net.zero_grad(set_to_none=True)


def test_absent_object_slots_are_masked(net):
    frames, masks, valid = _inputs(n=1)
    padded = torch.cat([masks, torch.zeros_like(masks)], 1)
    pvalid = torch.tensor([[True, False]])
    model = CycleModel(net)
    with torch.no_grad():
        one = model(frames, masks, valid, torch.tensor([1, 2]))
        two = model(frames, padded, pvalid, torch.tensor([1, 2]))
    assert torch.allclose(two.prob[:, :2], one.prob, atol=1e-5)
    assert two.prob[:, 2].max() < 1e-5
    l1 = cycle_loss(one.agg_logits, one.prob, masks, valid)
    l2 = cycle_loss(two.agg_logits, two.prob, padded, pvalid)
    assert l2.total.item() == pytest.approx(l1.total.item(), abs=1e-4)


def test_loss_terms():
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :2] = 1
    masks[0, 1, 2:, :2] = 1
    labels = labels_from_masks(masks)
    assert labels[0, 0, 0] == 1 and labels[0, 3, 0] == 2 and labels[0, 3, 3] == 0
    perfect = torch.cat([1 - masks.sum(1, keepdim=True), masks], 1)
    logits = (perfect * 40 - 20)
    terms = cycle_loss(logits, perfect, masks, torch.ones(1, 2, dtype=torch.bool))
    assert terms.cross_entropy < 1e-6 and terms.dice < 1e-6
    wrong = cycle_loss(-logits, 1 - perfect, masks, torch.ones(1, 2, dtype=torch.bool))
    assert wrong.total > 10
    # A masked slot does not count in dice.
    assert dice_loss(perfect[:, 1:], masks, torch.tensor([[True, False]])) < 1e-6
