"""--composite-motion/--composite-scale/--composite-rotation: validated config fields that
reach the composite clips; unset (and in configs recorded before they existed) they keep
the original paths; new long runs use stronger ones, resumed runs keep their own."""

from __future__ import annotations

import json

import pytest

import train.clips as clips
from stmae.composite import PathStrength
from train.cli import build_parser, config_from_args, main
from train.clips import ClipRequest, OneShotClips
from train.config import TrainConfig

from .conftest import tiny_data, write_video_folder


def test_flags_reach_the_config_and_default_to_the_original_paths():
    argv = ["--synthetic-clips", "2", "--model", "small", "--composite-motion", "0.3", "--composite-scale", "1",
            "--composite-rotation", "45"]
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.data.composite_strength == PathStrength(motion=0.3, scale=1.0, rotation=45.0)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    plain = config_from_args(build_parser().parse_args(argv[:4]))
    assert plain.data.composite_strength == PathStrength()  # no flag: the original paths
    # a train_config recorded before the fields existed (a run being resumed) keeps them too
    old = plain.to_dict()
    for key in ("composite_motion", "composite_scale", "composite_rotation"):
        del old["data"][key]
    assert TrainConfig.from_dict(old).data.composite_strength == PathStrength()


@pytest.mark.parametrize("flag,value", [("--composite-motion", "1.5"), ("--composite-scale", "-1"),
                                        ("--composite-rotation", "nan")])
def test_out_of_range_flags_exit_2_with_one_line(flag, value, capsys):
    assert main(["--synthetic-clips", "2", "--model", "small", "--device", "cpu", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stmae-train: error: composite ") and flag in err[0]
    with pytest.raises(ValueError, match="composite"):
        tiny_data(composite_motion="fast")


def test_composite_clips_are_made_with_the_configured_strength(tmp_path, monkeypatch):
    root = write_video_folder(tmp_path / "davis", {"alpha": 6, "beta": 5}, objects=1)
    seen = []
    real = clips.composite_clip
    monkeypatch.setattr(clips, "composite_clip", lambda *a: (seen.append(a[-1]), real(*a))[1])
    for strength in (PathStrength(), PathStrength(motion=0.5, scale=2.0, rotation=90.0)):
        data = tiny_data(davis_roots=(str(root),), davis_resolution="240p", synthetic_clips=0, composite_clips=2,
                         composite_motion=strength.motion, composite_scale=strength.scale,
                         composite_rotation=strength.rotation)
        ds = OneShotClips(data, seed=0, max_gap=lambda e: 2)
        sample = ds[ClipRequest(0, 2)]
        assert sample.name.startswith("composite-") and seen[-1] == strength


def test_new_long_runs_use_stronger_composite_paths(tmp_path):
    from train.long_run.core import LongRunOptions, new_config

    opts = LongRunOptions(minutes=1, davis=str(tmp_path), run_dir=str(tmp_path / "run"), start="scratch")
    cfg = new_config(opts, ["beta"])
    assert cfg.data.composite_strength == PathStrength(motion=0.35, scale=1.0, rotation=30.0)
    recorded = cfg.to_dict()  # what a resumed run reads back from its checkpoint: the same paths
    assert TrainConfig.from_dict(recorded).data.composite_strength == cfg.data.composite_strength
