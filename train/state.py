"""Training checkpoints: everything needed to resume exactly, written atomically.

The file is a toolkit checkpoint in the published format (``network`` = the STMAE state
dict, ``config`` = its ModelConfig) plus ``optimizer``, ``scheduler``, ``scaler``, ``it``
(optimizer steps done), ``epoch``, ``position`` (batches of ``epoch`` consumed), ``rng``
(the torch / CUDA / numpy / python RNG states of every rank) and ``train_config``.
``stmae-export`` and ``stmae-segment`` read it directly (the extra entries are ignored).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stmae.checkpoint import CheckpointError, check_finite, read_checkpoint_file, save_checkpoint
from stmae.network import STMAE


@dataclass
class Progress:
    """Where a run is: ``step`` optimizer steps done; ``epoch`` the current epoch;
    ``position`` batches of that epoch already consumed (by every rank)."""

    step: int = 0
    epoch: int = 0
    position: int = 0


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors and plain Python values (weights_only-safe)."""
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(np_state["state"]["pos"]),
        "numpy_has_gauss": int(np_state["has_gauss"]),
        "numpy_gauss": float(np_state["gauss"]),
        "python": (version, list(internal), gauss),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": state["numpy_pos"]},
        "has_gauss": state["numpy_has_gauss"],
        "gauss": state["numpy_gauss"],
    })
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_training_checkpoint(
    path: str | Path,
    net: STMAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    rng_by_rank: list[dict[str, Any]],
    train_config: dict[str, Any],
    processing_size: int | None = None,
) -> None:
    """Write the full training state atomically (temp file + rename). processing_size:
    the shorter side of the training frames (pixels), for ``--size auto``."""
    save_checkpoint(path, net, processing_size=processing_size, extra={
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "it": progress.step,
        "epoch": progress.epoch,
        "position": progress.position,
        "rng": rng_by_rank,
        "train_config": train_config,
    })


@dataclass(frozen=True)
class TrainingState:
    """A training checkpoint read back: the network state dict, the rest as saved."""

    network: dict[str, torch.Tensor]
    config: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    progress: Progress
    rng_by_rank: list[dict[str, Any]]
    train_config: dict[str, Any]


def load_training_checkpoint(path: str | Path) -> TrainingState:
    """Read a checkpoint written by :func:`save_training_checkpoint` (weights_only)."""
    obj = read_checkpoint_file(path)
    needed = ["network", "config", "optimizer", "scheduler", "scaler", "it", "epoch",
              "position", "rng", "train_config"]
    missing = [k for k in needed if k not in obj]
    if missing:
        raise CheckpointError(
            f"{path} cannot resume a run: it lacks {missing} (it is a model-only checkpoint; "
            "use it as --init-checkpoint to fine-tune instead)"
        )
    if not isinstance(obj["network"], dict) or not all(isinstance(v, torch.Tensor) for v in obj["network"].values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors under 'network'")
    check_finite(obj["network"], str(path))
    return TrainingState(
        network=obj["network"], config=obj["config"], optimizer=obj["optimizer"],
        scheduler=obj["scheduler"], scaler=obj["scaler"],
        progress=Progress(int(obj["it"]), int(obj["epoch"]), int(obj["position"])),
        rng_by_rank=list(obj["rng"]), train_config=obj["train_config"],
    )


@dataclass(frozen=True)
class ModelOnlyFile:
    """What :func:`export_model_only` wrote: ``entries``, the top-level entries besides
    ``network`` and ``config`` (``processing_size`` included when there is one);
    ``kept_float32``: {tensor stored in float32 because its values do not fit the storage
    dtype: its largest absolute value}."""

    entries: dict[str, Any]
    kept_float32: dict[str, float]


def export_model_only(
    source: str | Path,
    target: str | Path,
    extra: dict[str, Any] | None = None,
    storage_dtype: torch.dtype = torch.float32,
    processing_size: int | None = None,
    mem_every: int | None = None,
) -> ModelOnlyFile:
    """Write the network of a training checkpoint as a model-only toolkit checkpoint
    (``network`` + ``config`` + ``extra``), e.g. for ``weights/``. ``storage_dtype``
    float16 halves the file; :func:`stmae.load_checkpoint` reads it back into a float32
    network (the function is then that of the float16-rounded weights). A tensor whose
    values do not fit ``storage_dtype`` (float16 tops out at 65504) is stored in float32
    instead, so the file always loads. processing_size: the shorter side the network runs
    at (default: the source checkpoint's); refused (ValueError) unless the runtime runs at
    it. mem_every: the memory interval (frames) the runtime's ``--mem-every auto`` should
    use (default: the source checkpoint's, if it records one). The source's step (as
    ``trained_steps``), ``train_config`` and ``averaged_from`` are kept as provenance,
    under ``extra``."""
    from stmae.checkpoint import load_checkpoint

    from .config import check_mem_every, check_processing_size

    if storage_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"storage_dtype must be float32, float16 or bfloat16, got {storage_dtype}")
    if processing_size is not None:
        check_processing_size(processing_size, "--processing-size", "give the shorter side in pixels")
    if mem_every is not None:
        check_mem_every(mem_every)
    loaded = load_checkpoint(source, device="cpu")
    kept: dict[str, Any] = {}
    if isinstance(loaded.extra.get("it"), int):
        kept["trained_steps"] = loaded.extra["it"]
    if isinstance(loaded.extra.get("train_config"), dict):
        kept["train_config"] = loaded.extra["train_config"]
    if isinstance(loaded.extra.get("averaged_from"), list):  # a mean's provenance (average-weights)
        kept["averaged_from"] = loaded.extra["averaged_from"]
    kept.update(extra or {})
    size = processing_size if processing_size is not None else loaded.processing_size
    if size is not None:
        check_processing_size(size, f"the processing size that {source} records", "give --processing-size")
    every = mem_every if mem_every is not None else loaded.mem_every
    as_float32 = save_checkpoint(target, loaded.model, extra=kept, processing_size=size,
                                 storage_dtype=storage_dtype, mem_every=every)
    recorded = {**kept, **({"processing_size": size} if size is not None else {}),
                **({"mem_every": every} if every is not None else {})}
    return ModelOnlyFile(recorded, as_float32)
