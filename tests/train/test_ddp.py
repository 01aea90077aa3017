"""Two gloo processes (as torchrun would start them) train a few steps on tiny synthetic
clips: finite losses, identical parameters on both ranks, and only rank 0 writes the
checkpoint."""

from __future__ import annotations

import csv
import math
import os
import socket
from pathlib import Path

import torch
import pytest
import torch.multiprocessing as mp

from .conftest import tiny_config, tiny_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import train.loop as loop

    real_save = loop.save_training_checkpoint

    def recording_save(path, *args, **kwargs):
        with open(Path(out) / "saves.txt", "a") as fh:
            fh.write(f"{rank} {Path(path).name}\n")
        return real_save(path, *args, **kwargs)

    loop.save_training_checkpoint = recording_save
    cfg = tiny_config(Path(out) / "run", tiny_data(synthetic_clips=8), steps=3, checkpoint_every=2)
    result = loop.train(cfg, progress_bar=False)
    torch.save({"state": result.network.state_dict(), "loss": result.last_loss,
                "steps": result.steps}, Path(out) / f"rank{rank}.pt")


def test_two_gloo_processes_stay_in_sync(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    for r in ranks:
        assert r["steps"] == 3 and math.isfinite(r["loss"])
    with open(tmp_path / "run" / "train_log.csv") as fh:
        losses = [float(row["loss"]) for row in csv.DictReader(fh)]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)

    a, b = ranks[0]["state"], ranks[1]["state"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []

    # Saves: the step-2 checkpoint and the final one, all by rank 0, into one file.
    saves = (tmp_path / "saves.txt").read_text().split("\n")[:-1]
    assert saves == ["0 last.pth", "0 last.pth"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.pth"]
    # The checkpoint holds both ranks' RNG states and rank 0's weights.
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pth", weights_only=True)
    assert len(saved["rng"]) == world and saved["it"] == 3
    assert all(torch.equal(saved["network"][k], a[k].cpu()) for k in a)


def _val_worker(rank: int, world: int, port: int, out: str, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import train.loop as loop
    from train.config import ValidationConfig
    from train.validation import Validator, make_validator

    real_shard = Validator.shard

    def recording_shard(self, net, device, r=0, w=1):
        results = real_shard(self, net, device, r, w)
        with open(Path(out) / f"shard{rank}.txt", "a") as fh:
            fh.write(" ".join(s.name for s in results) + "\n")
        return results

    Validator.shard = recording_shard
    val = ValidationConfig(root=root, resolution="240p", sequences=("v1", "v2", "v3"),
                           every_steps=2, max_frames=3, size=-1)
    cfg = tiny_config(Path(out) / "run", tiny_data(synthetic_clips=8), steps=2, validation=val)
    result = loop.train(cfg, validate=make_validator(val), progress_bar=False)
    if rank == 0:
        torch.save(result.network.state_dict(), Path(out) / "net.pt")


def test_validation_is_shared_by_the_ranks(tmp_path):
    """Each rank scores its share of the validation videos (no rank waits at a barrier
    through a whole validation); rank 0 logs the scores of all of them."""
    from train.config import ValidationConfig
    from train.validation import make_validator

    from .conftest import write_video_folder

    root = write_video_folder(tmp_path / "val", {"v1": 4, "v2": 4, "v3": 4}, corrupt_later_masks=False)
    world = 2
    mp.spawn(_val_worker, args=(world, _free_port(), str(tmp_path), str(root)), nprocs=world, join=True)

    shards = [(tmp_path / f"shard{r}.txt").read_text().split() for r in range(world)]
    assert shards == [["v1", "v3"], ["v2"]]
    with open(tmp_path / "run" / "validation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and {"J&F/v1", "J&F/v2", "J&F/v3"} <= set(rows[0])
    # the gathered scores equal one process scoring all three videos with the same weights
    from stmae.config import preset
    from stmae.network import STMAE

    net = STMAE(preset("small"))
    net.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
    val = ValidationConfig(root=str(root), resolution="240p", sequences=("v1", "v2", "v3"),
                           every_steps=2, max_frames=3, size=-1)
    expected = make_validator(val)(net.eval(), torch.device("cpu"))
    for key in ("J&F", "J&F/v1", "J&F/v2", "J&F/v3"):
        assert float(rows[0][key]) == pytest.approx(expected[key], abs=1e-9)
