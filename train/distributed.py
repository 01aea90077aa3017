"""Process-group setup for torchrun (NCCL on GPUs, gloo on CPUs) and small collectives.

``torchrun --nproc_per_node=N -m train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; a plain ``stmae-train`` run is a world of one and creates no
process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """rank, world_size, local_rank; device: this process's device; backend: 'nccl',
    'gloo' or '' (no process group)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class DeviceUnavailable(ValueError):
    """``--device cuda`` where this process has no CUDA device: an environment problem the
    command line reports in one line with status 2, before anything is loaded."""


def env_local_rank() -> int:
    """This process's LOCAL_RANK (torchrun), 0 in a plain run."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def check_device(preference: str, local_rank: int | None = None) -> None:
    """Raise :class:`DeviceUnavailable` if ``preference`` is 'cuda' and this process
    (``local_rank``, default LOCAL_RANK) has no CUDA device; 'auto' and 'cpu' always pass."""
    if preference != "cuda":
        return
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            "no CUDA device is available; use --device cpu (or auto), or install a CUDA build of "
            "PyTorch and check the GPU driver (nvidia-smi)"
        )
    local_rank = env_local_rank() if local_rank is None else local_rank
    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:
        raise DeviceUnavailable(
            f"LOCAL_RANK {local_rank} has no CUDA device ({count} visible); start at most {count} "
            "processes per node (torchrun --nproc_per_node)"
        )


def resolve_device(preference: str, local_rank: int) -> torch.device:
    """'auto' -> cuda:local_rank when CUDA is available, else cpu. Raises
    :class:`DeviceUnavailable` for 'cuda' without a device for ``local_rank``."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        check_device("cuda", local_rank)
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(preference: str = "auto") -> DistInfo:
    """Join the torchrun process group if WORLD_SIZE > 1 (init_method env://)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = env_local_rank()
    device = resolve_device(preference, local_rank)
    backend = ""
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, device, backend)


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flags(info: DistInfo, flags: list[bool]) -> list[bool]:
    """Rank 0's flags, on every rank (so time-based decisions agree)."""
    if not info.distributed:
        return flags
    t = torch.tensor([float(f) for f in flags], device=info.device)
    dist.broadcast(t, src=0)
    return [bool(v) for v in t.tolist()]


def mean_across(info: DistInfo, values: list[float]) -> list[float]:
    if not info.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (only rank 0's list is used)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(info: DistInfo, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics). DDP does this at the start
    of every forward; doing it before a save and at the end keeps all ranks identical."""
    if not info.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
