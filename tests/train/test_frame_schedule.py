"""--frames-start: clips that grow from N frames to --frames over training (the clip-length
curriculum, beside the frame-gap one); off by default."""

from __future__ import annotations

import pytest

from train.cli import build_parser, config_from_args
from train.clips import ClipRequest, OneShotClips
from train.loop import train
from train.schedule import FrameSchedule, GapSchedule

from .conftest import tiny_config, tiny_data


def test_frame_schedule_grows_like_the_gap_schedule_and_is_off_by_default():
    grow = FrameSchedule(tiny_data(num_frames=8, frames_start=5), total_epochs=4)
    assert [grow(e) for e in range(6)] == [5, 6, 7, 8, 8, 8]
    off = FrameSchedule(tiny_data(num_frames=8), total_epochs=4)
    assert [off(e) for e in range(5)] == [8] * 5
    gaps = GapSchedule(tiny_data(gap_start=5, gap_end=8), total_epochs=4)
    assert [gaps(e) for e in range(4)] == [5, 6, 7, 8]  # the gap schedule is unchanged


def test_frames_start_is_validated_and_reaches_the_config():
    cfg = config_from_args(build_parser().parse_args(["--synthetic-clips", "2", "--model", "small",
                                                      "--frames", "8", "--frames-start", "5"]))
    assert (cfg.data.frames_start, cfg.data.num_frames) == (5, 8)
    for bad in (1, 9, -2):
        with pytest.raises(ValueError, match="frames_start"):
            tiny_data(num_frames=8, frames_start=bad)


def test_clips_have_the_scheduled_length():
    data = tiny_data(num_frames=5, frames_start=2, synthetic_clips=2)
    ds = OneShotClips(data, seed=0, max_gap=lambda e: 2, num_frames=FrameSchedule(data, total_epochs=4))
    assert [ds[ClipRequest(e, 0)].frames.shape[0] for e in range(4)] == [2, 3, 4, 5]
    plain = OneShotClips(tiny_data(num_frames=5, synthetic_clips=2), seed=0, max_gap=lambda e: 2)
    assert plain[ClipRequest(0, 0)].frames.shape[0] == 5


def test_a_run_trains_on_growing_clips(tmp_path, monkeypatch):
    seen = []
    real = OneShotClips.__getitem__

    def spy(self, request):
        sample = real(self, request)
        seen.append((request.epoch, sample.frames.shape[0]))
        return sample

    monkeypatch.setattr(OneShotClips, "__getitem__", spy)
    data = tiny_data(num_frames=3, frames_start=2, synthetic_clips=4)  # 2 batches of 2 a epoch
    result = train(tiny_config(tmp_path / "run", data, steps=4), progress_bar=False)
    assert result.steps == 4
    assert set(seen) == {(0, 2), (1, 3)}
