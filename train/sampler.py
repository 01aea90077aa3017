"""A distributed sampler that can resume in the middle of an epoch.

Like ``torch.utils.data.DistributedSampler`` (every rank gets a disjoint, equally long
share of a per-epoch permutation seeded by ``seed + epoch``), but it yields
:class:`~train.clips.ClipRequest` (epoch, index) and can skip the samples a run already
consumed in the current epoch (:meth:`set_epoch` with ``start``).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler

from .clips import ClipRequest


class ResumableDistributedSampler(Sampler[ClipRequest]):
    """dataset_len clips, ``num_replicas`` ranks, drop_last semantics (each rank gets
    floor(len / replicas) clips per epoch, in whole batches)."""

    def __init__(
        self, dataset_len: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if dataset_len < num_replicas:
            raise ValueError(
                f"{dataset_len} clips cannot be shared by {num_replicas} processes; "
                "add data (repeats, synthetic clips) or use fewer processes"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        self.dataset_len = dataset_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.per_rank = dataset_len // num_replicas
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its ``start``-th sample of this rank on."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start {start} is outside 0..{self.per_rank}")
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """This rank's indices for the current epoch (all of them, ignoring ``start``)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            perm = list(range(self.dataset_len))
        total = self.per_rank * self.num_replicas
        return perm[:total][self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[ClipRequest]:
        for index in self.order()[self.start :]:
            yield ClipRequest(self.epoch, index)

    def __len__(self) -> int:
        return self.per_rank - self.start


def batches_per_epoch(sampler: ResumableDistributedSampler, batch_size: int) -> int:
    """Whole batches per rank and epoch (the last partial batch is dropped)."""
    return sampler.per_rank // batch_size


def epochs_for(steps: int, per_epoch: int) -> int:
    return max(1, math.ceil(steps / max(per_epoch, 1)))
