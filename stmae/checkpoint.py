"""Checkpoint loading and saving in the published STMAE format.

A checkpoint file is either a plain state dict or a dict holding it under ``network``
(training checkpoints also carry ``optimizer``, ``scheduler``, ``it``, ``epoch``).
Checkpoints this toolkit writes add ``config`` (the :class:`ModelConfig` as a dict), so a
file alone is always enough; a checkpoint without ``config`` is the published preset.
Files are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .config import ModelConfig, preset
from .network import STMAE

FORMAT_NAME = "stmae"
FORMAT_VERSION = 1
_WIDEN_KEY = "value_encoder.conv1.weight"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says what is wrong."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """model: an STMAE in eval mode on the requested device; config: its architecture;
    has_config: whether the file named its config (False: the published preset was assumed);
    widened: whether a single-object mask encoder was widened to 5 input channels;
    extra: every other top-level entry of the file (optimizer, step, ...)."""

    model: STMAE
    config: ModelConfig
    has_config: bool
    widened: bool
    extra: dict[str, Any]


def read_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """torch.load a checkpoint safely; raise CheckpointError for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign or corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint that can be loaded safely "
            f"(torch.load with weights_only=True failed: {first})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict or a dict with 'network'"
        )
    return obj


def split_checkpoint(obj: Mapping[str, Any], source: str = "checkpoint") -> tuple[
    dict[str, torch.Tensor], ModelConfig | None, dict[str, Any]
]:
    """-> (state dict, config or None, the remaining top-level entries)."""
    if "network" in obj:
        state = obj["network"]
        extra = {k: v for k, v in obj.items() if k not in ("network", "config")}
    else:
        state, extra = obj, {}
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(
            f"{source} does not hold a state dict of tensors (neither at the top level nor "
            f"under 'network')"
        )
    config = None
    if "config" in obj:
        try:
            config = ModelConfig.from_dict(dict(obj["config"]))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source} has an invalid 'config': {exc}") from None
    return dict(state), config, extra


def widen_single_object(state: dict[str, torch.Tensor]) -> bool:
    """Widen a single-object mask encoder (conv1 with 4 input channels) with a zero
    "others" channel, in place, as the published code does. Returns True if widened."""
    weight = state.get(_WIDEN_KEY)
    if weight is not None and weight.ndim == 4 and weight.shape[1] == 4:
        state[_WIDEN_KEY] = F.pad(weight, (0, 0, 0, 0, 0, 1))
        return True
    return False


def check_state_dict(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Strict check: raise CheckpointError listing missing, unexpected and mis-shaped tensors."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or misshaped):
        return

    def listing(title: str, items: list[str]) -> str:
        shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
        return f"  {title} ({len(items)}):\n" + "\n".join(f"    {s}" for s in shown)

    parts = [f"{source} does not match the STMAE network:"]
    if missing:
        parts.append(listing("missing tensors", missing))
    if unexpected:
        parts.append(listing("unexpected tensors", unexpected))
    if misshaped:
        parts.append(listing("tensors with the wrong shape", misshaped))
    parts.append(
        "  (a checkpoint without a 'config' entry is read as the published preset; "
        "toolkit checkpoints name their config)"
    )
    raise CheckpointError("\n".join(parts))


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    config: ModelConfig | None = None,
) -> LoadedCheckpoint:
    """Load a published or toolkit checkpoint into a new STMAE in eval mode.

    ``config`` overrides the file's config (rarely needed). Raises CheckpointError.
    """
    obj = read_checkpoint_file(path)
    state, file_config, extra = split_checkpoint(obj, source=str(path))
    has_config = file_config is not None
    config = config or file_config or preset("published")
    widened = widen_single_object(state)
    model = STMAE(config)
    check_state_dict(model.state_dict(), state, source=str(path))
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return LoadedCheckpoint(model, config, has_config, widened, extra)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the target folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    model: STMAE,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``{'network': state_dict, 'config': ..., 'format': 'stmae', ...extra}``
    atomically. The 'network' entry is in the published format."""
    reserved = {"network", "config", "format", "format_version"}
    clash = reserved & set(extra or {})
    if clash:
        raise ValueError(f"extra entries may not use the reserved keys {sorted(clash)}")
    obj: dict[str, Any] = {
        "network": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": model.config.to_dict(),
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
    }
    obj.update(extra or {})
    atomic_torch_save(obj, path)
