"""Checkpoint loading and saving: published and toolkit formats, widening, clear errors."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from stmae import STMAE, CheckpointError, ModelConfig, load_checkpoint, preset, save_checkpoint
from stmae.reference_weights import read_contract_tsv, reference_state_dict

from ..conftest import CONTRACT_TSV


@pytest.fixture(scope="module")
def published_state() -> dict[str, torch.Tensor]:
    return reference_state_dict(read_contract_tsv(str(CONTRACT_TSV)))


def test_state_dict_matches_contract_names_shapes_order():
    contract = read_contract_tsv(str(CONTRACT_TSV))
    state = STMAE(preset("published")).state_dict()
    assert list(state) == list(contract)
    assert {k: tuple(v.shape) for k, v in state.items()} == contract
    assert len(state) == 396
    params = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert 58.5e6 < params < 58.7e6


def _assert_same(model: STMAE, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "under-network"])
def test_published_checkpoint_loads_without_warning(tmp_path, published_state, wrapped):
    path = tmp_path / "published.pth"
    obj = {"network": published_state, "it": 5, "epoch": 1} if wrapped else published_state
    torch.save(obj, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ckpt = load_checkpoint(path)
    assert ckpt.config == preset("published") and not ckpt.has_config and not ckpt.widened
    assert not ckpt.model.training
    _assert_same(ckpt.model, published_state)
    if wrapped:
        assert ckpt.extra == {"it": 5, "epoch": 1}


def test_single_object_checkpoint_is_widened_with_zeros(tmp_path, published_state):
    state = dict(published_state)
    full = state["value_encoder.conv1.weight"]
    state["value_encoder.conv1.weight"] = full[:, :4].clone()
    path = tmp_path / "s0.pth"
    torch.save(state, path)
    ckpt = load_checkpoint(path)
    assert ckpt.widened
    weight = ckpt.model.state_dict()["value_encoder.conv1.weight"]
    assert weight.shape == (64, 5, 7, 7)
    assert torch.equal(weight[:, :4], full[:, :4])
    assert torch.count_nonzero(weight[:, 4]) == 0


def test_round_trip_keeps_config_and_weights(tmp_path):
    config = preset("small")
    model = STMAE(config)
    path = tmp_path / "sub" / "small.pth"
    save_checkpoint(path, model, extra={"step": 7})
    assert [p.name for p in path.parent.iterdir()] == ["small.pth"]  # no temp file left
    ckpt = load_checkpoint(path)
    assert ckpt.has_config and ckpt.config == config and ckpt.extra["step"] == 7
    _assert_same(ckpt.model, model.state_dict())
    raw = torch.load(path, weights_only=True)
    assert set(raw["network"]) == set(model.state_dict())


def test_save_replaces_atomically_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    model = STMAE(preset("small"))
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, model)
    before = path.read_bytes()

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_renamed_tensor_is_named_in_error(tmp_path, published_state):
    state = dict(published_state)
    state["decoder.pred.weights"] = state.pop("decoder.pred.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg  # one line for the command-line tools ...
    assert "1 missing tensor(s) (e.g. decoder.pred.weight)" in msg
    assert "1 unexpected tensor(s) (e.g. decoder.pred.weights)" in msg
    details = err.value.details  # ... and the full listing for the library user
    assert "missing tensors (1)" in details and "decoder.pred.weight" in details
    assert "unexpected tensors (1)" in details and "decoder.pred.weights" in details


def test_wrong_shape_is_named_in_error(tmp_path, published_state):
    state = dict(published_state)
    state["decoder.pred.bias"] = torch.zeros(2)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"decoder\.pred\.bias: checkpoint \(2,\) vs model \(1,\)"):
        load_checkpoint(path)


def test_missing_tensor_is_named_in_error(tmp_path, published_state):
    state = dict(published_state)
    del state["key_encoder.layer3.5.bn3.running_var"]
    path = tmp_path / "missing.pth"
    torch.save({"network": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "1 missing tensor(s) (e.g. key_encoder.layer3.5.bn3.running_var)" in str(err.value)
    assert re.search(r"missing tensors \(1\):\n\s+key_encoder\.layer3\.5\.bn3\.running_var", err.value.details)


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")


def test_pickled_object_is_refused(tmp_path):
    """weights_only=True: arbitrary pickled objects never execute or load."""

    path = tmp_path / "evil.pth"
    torch.save({"network": {"a": torch.zeros(1)}, "obj": ModelConfig()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(path)
    torch.save({"network": {"x": 3}}, path)
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        load_checkpoint(path)


def test_invalid_config_entry(tmp_path):
    model = STMAE(preset("small"))
    path = tmp_path / "bad_config.pth"
    torch.save({"network": model.state_dict(), "config": {"key_backbone": "vgg"}}, path)
    with pytest.raises(CheckpointError, match="invalid 'config'.*vgg"):
        load_checkpoint(path)
