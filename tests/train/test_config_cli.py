"""Config validation, the CLI (one-line errors, JSON round trip) and the checkpoint format."""

from __future__ import annotations

import json

import pytest
import torch

from stmae.checkpoint import load_checkpoint
from train.cli import build_parser, config_from_args, main
from train.config import OptimConfig, ScheduleConfig, TrainConfig
from train.loop import checkpoint_path, train
from train.schedule import GapSchedule, StepDecay
from train.state import export_model_only

from .conftest import tiny_config, tiny_data


def test_train_config_validation_and_round_trip():
    data = tiny_data()
    with pytest.raises(ValueError, match="unknown model preset"):
        TrainConfig(data=data, model="huge")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(data=data, batch_size=0)
    with pytest.raises(ValueError, match="decay_at"):
        ScheduleConfig(decay_at=(10, 5))
    with pytest.raises(ValueError, match="base_lr"):
        OptimConfig(base_lr=0)
    cfg = TrainConfig(data=data, model="small")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"data": {"synthetic_clips": 1, "colour": 1}})


def test_linear_lr_scaling_and_schedules():
    assert OptimConfig().lr_for(32) == pytest.approx(2e-5)
    assert OptimConfig().lr_for(8) == pytest.approx(5e-6)
    decay = StepDecay(ScheduleConfig(steps=100, warmup_steps=10, decay_at=(50, 80)))
    assert decay(0) == pytest.approx(0.1) and decay(9) == pytest.approx(1.0)
    assert decay(50) == pytest.approx(0.1) and decay(80) == pytest.approx(0.01)
    gaps = GapSchedule(tiny_data(gap_start=5, gap_end=25), total_epochs=5)
    assert [gaps(e) for e in range(6)] == [5, 10, 15, 20, 25, 25]


def test_cli_builds_the_published_defaults_and_overrides():
    args = build_parser().parse_args(["--davis", "/d", "--steps", "600", "--model", "small",
                                      "--crop", "192", "192", "--exclude", "bear"])
    cfg = config_from_args(args)
    assert cfg.model == "small" and cfg.data.crop_size == (192, 192)
    assert cfg.data.num_frames == 8 and cfg.num_refs == 3 and cfg.optim.base_lr == 2e-5
    assert cfg.schedule.decay_at == (500,) and cfg.data.exclude_sequences == ("bear",)


def test_cli_bad_input_is_one_line(capsys, tmp_path):
    assert main(["--synthetic-clips", "2", "--crop", "30", "30", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "multiples of 16" in err[0]
    assert main(["--output", str(tmp_path)]) == 2
    assert "no training data" in capsys.readouterr().err


def test_checkpoint_is_published_format_and_exports_model_only(tmp_path):
    cfg = tiny_config(tmp_path / "run", tiny_data(), steps=1)
    result = train(cfg, progress_bar=False)
    ckpt = checkpoint_path(cfg)
    raw = torch.load(ckpt, weights_only=True)
    assert {"network", "config", "optimizer", "scheduler", "it", "epoch"} <= set(raw)
    loaded = load_checkpoint(ckpt)  # what stmae-export / stmae-segment call
    assert loaded.has_config and loaded.config.value_dim == 128
    state = result.network.state_dict()
    assert all(torch.equal(loaded.model.state_dict()[k], state[k]) for k in state)

    out = tmp_path / "model.pth"
    export_model_only(ckpt, out, extra={"note": "test"})
    slim = torch.load(out, weights_only=True)
    assert "optimizer" not in slim and slim["note"] == "test"
    assert out.stat().st_size < ckpt.stat().st_size / 2
    half = tmp_path / "half.pth"
    export_model_only(ckpt, half, storage_dtype=torch.float16)
    assert half.stat().st_size < out.stat().st_size * 0.6
    back = load_checkpoint(half).model  # float32 network from float16 storage
    p = next(back.parameters())
    assert p.dtype == torch.float32
    assert torch.allclose(p, state[next(iter(dict(back.named_parameters())))], rtol=1e-2, atol=1e-3)
    # Resuming from a model-only file is refused with a clear message.
    assert main(["--synthetic-clips", "6", "--model", "small", "--crop", "32", "48",
                 "--frames", "3", "--batch-size", "2", "--device", "cpu", "--steps", "2",
                 "--output", str(tmp_path / "r"), "--resume", str(out), "--no-progress"]) == 2


def test_stop_at_step_leaves_a_resumable_run(tmp_path, capsys):
    flags = ["--synthetic-clips", "4", "--model", "small", "--crop", "32", "48", "--frames", "3",
             "--batch-size", "2", "--device", "cpu", "--steps", "4", "--log-every", "1",
             "--output", str(tmp_path / "r"), "--no-progress"]
    assert main(flags + ["--stop-at-step", "2"]) == 0
    assert "stopped at --stop-at-step" in capsys.readouterr().out
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.pth", weights_only=True)["it"] == 2
    assert main(flags + ["--resume", "auto", "--stop-at-step", "2"]) == 2  # already there
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "after the run's step 2" in err[0]
    assert main(flags + ["--resume", "auto"]) == 0
    assert "finished at step 4" in capsys.readouterr().out
