"""Loader workers persist across epochs and still see each epoch's order: a run with two
workers over two epochs and a resume equals the same run in the main process, bit for bit."""

from __future__ import annotations

import torch

from train.loop import train

from .conftest import tiny_config, tiny_data


def test_persistent_workers_follow_every_epoch(tmp_path, tiny_davis):
    # 3 on-disk videos + 4 synthetic clips = 3 batches of 2 per epoch; 7 steps = 3 epochs.
    common = dict(davis_roots=(str(tiny_davis),), davis_resolution="240p", synthetic_clips=4)
    inline = train(tiny_config(tmp_path / "inline", tiny_data(**common), steps=7), progress_bar=False)
    workers = train(tiny_config(tmp_path / "workers", tiny_data(num_workers=2, **common), steps=7),
                    progress_bar=False)
    a, b = inline.network.state_dict(), workers.network.state_dict()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"workers changed the run: {different[:5]}"
    # the epochs differ (a loader stuck on epoch 0's order would not train the same weights)
    rows = (tmp_path / "workers" / "train_log.csv").read_text().splitlines()
    epochs = {int(r.split(",")[1]) for r in rows[1:]}
    assert max(epochs) == 2
