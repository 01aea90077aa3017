"""The committed state of the long run: a training checkpoint (network, optimizer, scheduler,
RNGs, data position, train_config; float32) stored as two files, each under the 100 MB that
GitHub accepts per file (the ``small`` preset's whole state is 108 MB): ``state_network.pth``
(everything but the optimizer) and ``state_optimizer.pth`` (AdamW's moments). Joined back,
they are the checkpoint as it was, bit for bit in every tensor."""

from __future__ import annotations

from pathlib import Path

from stmae.checkpoint import CheckpointError, atomic_torch_save, read_checkpoint_file

NETWORK_PART = "state_network.pth"
OPTIMIZER_PART = "state_optimizer.pth"


def has_state(folder: str | Path) -> bool:
    return (Path(folder) / NETWORK_PART).is_file()


def state_step(folder: str | Path) -> int:
    """Optimizer steps done by the committed state (read from its network part)."""
    return int(read_checkpoint_file(Path(folder) / NETWORK_PART)["it"])


def save_state_parts(checkpoint: str | Path, folder: str | Path) -> int:
    """Split the training checkpoint into ``folder``'s two parts (atomic each; the optimizer
    part first, so a network part never names a step its optimizer part lacks). Returns
    the bytes written."""
    obj = read_checkpoint_file(checkpoint)
    if "optimizer" not in obj or "it" not in obj:
        raise CheckpointError(f"{checkpoint} is not a training checkpoint (no optimizer state)")
    folder = Path(folder)
    atomic_torch_save({"optimizer": obj["optimizer"], "it": obj["it"]}, folder / OPTIMIZER_PART)
    atomic_torch_save({k: v for k, v in obj.items() if k != "optimizer"}, folder / NETWORK_PART)
    return sum((folder / name).stat().st_size for name in (NETWORK_PART, OPTIMIZER_PART))


def join_state_parts(folder: str | Path, checkpoint: str | Path) -> int:
    """Write the training checkpoint held by ``folder``'s parts to ``checkpoint`` (atomic).
    Returns its step. CheckpointError if the parts are of different steps."""
    folder = Path(folder)
    network = read_checkpoint_file(folder / NETWORK_PART)
    optimizer = read_checkpoint_file(folder / OPTIMIZER_PART)
    if network.get("it") != optimizer.get("it") or "optimizer" not in optimizer:
        raise CheckpointError(f"{folder}: {NETWORK_PART} (step {network.get('it')}) and {OPTIMIZER_PART} "
                              f"(step {optimizer.get('it')}) are not one state; restore both from git")
    atomic_torch_save({**network, "optimizer": optimizer["optimizer"]}, checkpoint)
    return int(network["it"])
