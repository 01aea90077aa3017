"""Exact resume: N steps == N/2 steps, then a new process resuming from the checkpoint
for the other N/2 steps (bit for bit on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.loop import checkpoint_path, train
from train.state import load_training_checkpoint

from .conftest import tiny_config, tiny_data

REPO = Path(__file__).resolve().parents[2]


def test_half_kill_resume_matches_uninterrupted(tmp_path, tiny_davis):
    # 3 on-disk videos + 4 synthetic clips = 3 batches of 2 per epoch: stopping after
    # step 4 of 6 leaves the run in the middle of its second epoch.
    data = tiny_data(davis_roots=(str(tiny_davis),), davis_resolution="240p", synthetic_clips=4)
    steps = 6
    full = train(tiny_config(tmp_path / "full", data, steps=steps), progress_bar=False)

    cfg = tiny_config(tmp_path / "split", data, steps=steps)
    first = train(cfg, stop_after=4, progress_bar=False)  # then the process "dies"
    assert first.steps == 4 and first.stopped_early
    saved = load_training_checkpoint(checkpoint_path(cfg))
    assert (saved.progress.step, saved.progress.epoch, saved.progress.position) == (4, 1, 1)

    # A new process resumes from the checkpoint through the CLI (same thread count).
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run(
        [sys.executable, "-m", "train", "--config", str(tmp_path / "split" / "train_config.json"),
         "--resume", "auto", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished at step 6" in proc.stdout

    resumed = torch.load(checkpoint_path(cfg), weights_only=True)
    assert resumed["it"] == steps
    expected = {k: v.detach() for k, v in full.network.state_dict().items()}
    got = resumed["network"]
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"tensors differ after resume: {different[:5]}"
    # ... and the second half did train (the comparison is not vacuous).
    half = first.network.state_dict()
    assert not all(torch.equal(half[k], got[k]) for k in half)


def test_resume_follows_the_schedule_and_lr_of_its_own_flags(tmp_path):
    """Extending a run (--steps/--decay-at/--lr changed on resume) uses the new schedule:
    LambdaLR's saved state would otherwise bring back the old decay steps and base lr."""
    from train.config import OptimConfig, ScheduleConfig

    data = tiny_data()
    first = tiny_config(tmp_path / "run", data, steps=3,
                        schedule=ScheduleConfig(steps=3, warmup_steps=1, decay_at=(2,)))
    train(first, progress_bar=False)
    assert torch.load(checkpoint_path(first), weights_only=True)["optimizer"]["param_groups"][0]["lr"] \
        == pytest.approx(1e-3 * 0.1)  # decayed after step 2 (base 1e-3 at batch 2)

    longer = tiny_config(tmp_path / "run", data, steps=6, optim=OptimConfig(base_lr=5e-4, base_batch=2),
                         schedule=ScheduleConfig(steps=6, warmup_steps=1, decay_at=(5,)))
    train(longer, resume=checkpoint_path(first), progress_bar=False)
    saved = torch.load(checkpoint_path(longer), weights_only=True)
    assert saved["it"] == 6
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-4 * 0.1)  # decayed at 5, not 2
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    header = rows[0].split(",")
    lr_at = {int(r.split(",")[0]): float(r.split(",")[header.index("lr")]) for r in rows[1:]}
    assert lr_at[4] == pytest.approx(5e-4)  # the resumed part: the new base lr until step 5
