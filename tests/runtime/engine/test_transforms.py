import numpy as np
import torch

from runtime.engine.transforms import FrameGeometry, processed_size


def test_processed_size():
    assert processed_size(480, 854, 480) == (480, 854)
    assert processed_size(240, 427, 480) == (480, 854)
    assert processed_size(854, 480, 240) == (427, 240)
    assert processed_size(50, 70, -1) == (50, 70)


def test_geometry_pads_and_restores():
    geo = FrameGeometry.for_frame(50, 70, -1)
    assert geo.padded_size == (64, 80) and geo.key_size == (4, 5)
    frame = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    image = geo.prepare_image(frame, torch.device("cpu"))
    assert image.shape == (1, 3, 64, 80) and image.is_contiguous()
    # Half the padding before (7 rows, 5 cols), zeros there.
    assert image[..., :7, :].abs().sum() == 0 and image[..., :, :5].abs().sum() == 0
    prob = torch.rand(1, 2, 64, 80)
    assert torch.equal(geo.restore(prob), prob[..., 7:57, 5:75])


def test_masks_resized_with_nearest_labels():
    geo = FrameGeometry.for_frame(40, 60, 20)
    labels = np.zeros((40, 60), np.uint8)
    labels[:20, :30] = 3
    labels[20:, 30:] = 7
    masks = geo.prepare_masks(labels, [3, 7], torch.device("cpu"))
    assert geo.resized_size == (20, 30) and masks.shape == (1, 2, 32, 32)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert masks[0, 0].sum() == 150 and masks[0, 1].sum() == 150


def test_channel_argmax_matches_argmax_with_ties():
    from runtime.engine.transforms import channel_argmax

    gen = torch.Generator().manual_seed(0)
    for channels in (1, 2, 3, 7):
        prob = torch.rand(channels, 33, 47, generator=gen)
        # Ties: quantize so equal values are common; the first maximal channel wins.
        prob = (prob * 4).round() / 4
        got = channel_argmax(prob[:, :, 1:45])  # a strided (unpadded) view, as the session has
        want = prob[:, :, 1:45].argmax(dim=0)
        assert got.dtype == torch.uint8
        assert torch.equal(got.long(), want)
