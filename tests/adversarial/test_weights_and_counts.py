"""Weights files are valid when written; training counts are checked before allocation;
``--device cuda`` without a GPU is refused in one line (issue 22, classes 3, 4 and 5)."""

from __future__ import annotations

import pytest
import torch

import train.loop
from stmae import STMAE, load_checkpoint, preset, save_checkpoint
from train.cli import main as train_main
from train.config import MAX_CLIPS_PER_EPOCH

from tests.train.conftest import write_video_folder
from .conftest import one_line_error, run_main, snapshot

BIG_VAR = "key_encoder.bn1.running_var"


@pytest.fixture()
def big_variance_checkpoint(tmp_path):
    """A small-preset checkpoint with a finite BatchNorm variance of 1e6 (float16 tops out
    at 65504, so a float16 cast makes it Inf)."""
    torch.manual_seed(0)
    model = STMAE(preset("small"))
    model.state_dict()[BIG_VAR].fill_(1e6)
    path = tmp_path / "src" / "big.pth"
    save_checkpoint(path, model, processing_size=240)
    return path


def _assert_loads_with_big_variance(path):
    raw = torch.load(path, weights_only=True)
    assert raw["network"][BIG_VAR].dtype == torch.float32
    others = [v.dtype for k, v in raw["network"].items() if v.is_floating_point() and k != BIG_VAR]
    assert others and set(others) == {torch.float16}  # only the tensor that does not fit stays float32
    loaded = load_checkpoint(path)  # the normal loader: refuses NaN/Inf
    assert torch.all(loaded.model.state_dict()[BIG_VAR] == 1e6)


def test_export_weights_keeps_float32_for_values_float16_cannot_hold(big_variance_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pth"
    code, stdout, err = run_main(train_main, capsys, "export-weights", big_variance_checkpoint, "--out", out)
    assert code == 0, err
    assert stdout.startswith("stmae-train export-weights: wrote")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stmae-train export-weights: warning: kept 1 tensor(s) in float32")
    assert BIG_VAR in lines[0] and "1e+06" in lines[0]
    _assert_loads_with_big_variance(out)


def test_average_weights_keeps_float32_for_values_float16_cannot_hold(big_variance_checkpoint, tmp_path, capsys):
    second = tmp_path / "src" / "second.pth"
    torch.manual_seed(1)
    model = STMAE(preset("small"))
    model.state_dict()[BIG_VAR].fill_(1e6)
    save_checkpoint(second, model, processing_size=240)
    out = tmp_path / "mean.pth"
    code, _, err = run_main(train_main, capsys, "average-weights", big_variance_checkpoint, second, "--out", out)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "warning: kept 1 tensor(s) in float32" in lines[0] and BIG_VAR in lines[0]
    _assert_loads_with_big_variance(out)


@pytest.mark.parametrize("size", [100000, 0, 8, -1])
def test_export_weights_refuses_a_processing_size_the_runtime_refuses(seeded_small_checkpoint, tmp_path, capsys, size):
    before = snapshot(tmp_path)
    code, _, err = run_main(train_main, capsys, "export-weights", seeded_small_checkpoint, "--out",
                            tmp_path / "m.pth", "--processing-size", size)
    assert code == 2
    one_line_error(err, "stmae-train export-weights", "--processing-size", str(size), "16..4320")
    assert snapshot(tmp_path) == before and not (tmp_path / "m.pth").exists()


def test_weights_commands_refuse_a_recorded_processing_size_the_runtime_refuses(tmp_path, capsys):
    """A source recording 100000 (the loader accepts any size >= 16; stmae-segment --size
    auto would not): refused unless --processing-size mends it."""
    sources = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        sources.append(tmp_path / f"s{seed}.pth")
        save_checkpoint(sources[-1], STMAE(preset("small")), processing_size=100000)
    before = snapshot(tmp_path)
    code, _, err = run_main(train_main, capsys, "export-weights", sources[0], "--out", tmp_path / "m.pth")
    assert code == 2
    one_line_error(err, "stmae-train export-weights", "100000", "--processing-size")
    code, _, err = run_main(train_main, capsys, "average-weights", *sources, "--out", tmp_path / "a.pth")
    assert code == 2
    one_line_error(err, "stmae-train average-weights", "100000")
    assert snapshot(tmp_path) == before
    code, _, err = run_main(train_main, capsys, "export-weights", sources[0], "--out", tmp_path / "m.pth",
                            "--processing-size", 240, "--dtype", "float32")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "m.pth").processing_size == 240


def _refuse_training(*args, **kwargs):
    raise AssertionError("the training loop started: the count was not checked up front")


@pytest.mark.parametrize("flag, value, needle", [
    ("--region-clips", 10**9, "region_clips"),
    ("--composite-clips", 10**14, "composite_clips"),
    ("--synthetic-clips", 10**9, "synthetic_clips"),
    ("--repeats", 10**9, "repeats"),
    ("--frames", 10**9, "--frames"),
    ("--max-objects", 10**9, "--max-objects"),
    ("--composite-objects", 10**9, "--composite-objects"),
    ("--refs", 10**9, "--refs"),
    ("--batch-size", 10**9, "--batch-size"),
    ("--num-workers", 10**6, "--num-workers"),
    ("--gap-end", 10**30, "--gap-end"),
    ("--steps", 10**15, "--steps"),
    ("--seed", 2**64, "--seed"),
    ("--davis-resolution", "100000p", "--davis-resolution"),
])
def test_training_counts_are_refused_before_anything_is_allocated(tmp_path, capsys, monkeypatch, flag, value, needle):
    """The flags are refused when the config is made: the training loop never starts (on
    the code before, each of these started it and asked for gigabytes or overflowed)."""
    monkeypatch.setattr(train.loop, "train", _refuse_training)
    args = ["--synthetic-clips", 2, "--davis", tmp_path / "davis", "--model", "small", "--device", "cpu",
            "--crop", 32, 48, "--output", tmp_path / "run", flag, value]
    code, _, err = run_main(train_main, capsys, *args)
    assert code == 2
    one_line_error(err, "stmae-train", needle)
    assert not (tmp_path / "run").exists()


def test_an_epoch_too_large_for_the_sampler_is_refused_before_the_permutation(tmp_path, capsys, monkeypatch):
    """--repeats within bounds, times the videos found, over the epoch bound: refused once
    the videos are listed, before torch.randperm is asked for the epoch."""
    davis = write_video_folder(tmp_path / "davis", {"alpha": 3, "beta": 3, "gamma": 3})
    real = torch.randperm

    def bounded_randperm(n, *args, **kwargs):
        assert n <= MAX_CLIPS_PER_EPOCH, f"torch.randperm({n}) was called"
        return real(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", bounded_randperm)
    repeats = MAX_CLIPS_PER_EPOCH // 2
    code, _, err = run_main(train_main, capsys, "--davis", davis, "--davis-resolution", "240p", "--repeats", repeats,
                            "--model", "small", "--device", "cpu", "--crop", 32, 48, "--frames", 3,
                            "--batch-size", 2, "--steps", 1, "--no-progress", "--output", tmp_path / "run")
    assert code == 2
    one_line_error(err, "stmae-train", "--repeats", str(3 * repeats))
    assert not (tmp_path / "run").exists()


def test_device_cuda_without_a_gpu_is_one_line_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train.loop, "train", _refuse_training)
    code, _, err = run_main(train_main, capsys, "--synthetic-clips", 2, "--model", "small", "--device", "cuda",
                            "--output", tmp_path / "run")
    assert code == 2
    one_line_error(err, "stmae-train", "no CUDA device is available", "--device cpu")
    assert not (tmp_path / "run").exists()
