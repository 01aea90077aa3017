"""Checkpoint loading and saving in the published STMAE format.

A checkpoint file is either a plain state dict or a dict holding it under ``network``
(training checkpoints also carry ``optimizer``, ``scheduler``, ``it``, ``epoch``).
Checkpoints this toolkit writes add ``config`` (the :class:`ModelConfig` as a dict), so a
file alone is always enough; a checkpoint without ``config`` is the published preset.
Files are read with ``torch.load(weights_only=True)`` only.

Toolkit checkpoints may also record ``processing_size``: the shorter side, in pixels, of
the frames the network was trained or evaluated at (e.g. 240 for a model trained on DAVIS
240p). The runtime's ``--size auto`` uses it; published checkpoints (without it) are run
at :data:`PUBLISHED_PROCESSING_SIZE`. They may also record ``mem_every``: how often (in
frames) the runtime writes a frame to memory when running this network, chosen on held-out
video; the runtime's ``--mem-every auto`` uses it, and the published schedule (every 5th
frame) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .atomic import atomic_write
from .checkpoint_peek import MEM_EVERY_KEY, PROCESSING_SIZE_KEY, RECORDED, valid_recorded  # the peek's keys
from .config import ModelConfig, preset
from .network import STMAE

FORMAT_NAME = "stmae"
FORMAT_VERSION = 1
_WIDEN_KEY = "value_encoder.conv1.weight"
# The published models were trained and evaluated on 480p frames.
PUBLISHED_PROCESSING_SIZE = 480


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message (one line) says what is wrong;
    ``details`` may hold a longer listing (e.g. every missing tensor)."""

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details or message


@dataclass(frozen=True)
class LoadedCheckpoint:
    """model: an STMAE in eval mode on the requested device; config: its architecture;
    has_config: whether the file named its config (False: the published preset was assumed);
    widened: whether a single-object mask encoder was widened to 5 input channels;
    extra: every other top-level entry of the file (optimizer, step, ...);
    processing_size: the shorter side (pixels) the file says the network was trained or
    evaluated at, or None when it does not say (published checkpoints);
    mem_every: the memory interval (frames) the file says to run the network with, or None
    when it does not say."""

    model: STMAE
    config: ModelConfig
    has_config: bool
    widened: bool
    extra: dict[str, Any]
    processing_size: int | None = None
    mem_every: int | None = None

    @property
    def recommended_size(self) -> int:
        """The shorter side to run this network at: its own, else the published 480."""
        return self.processing_size or PUBLISHED_PROCESSING_SIZE


def recorded_entry(obj: Mapping[str, Any], key: str, source: str = "checkpoint") -> int | None:
    """A recorded entry of a checkpoint dict (``processing_size`` or ``mem_every``; None if
    absent); raises CheckpointError if it is not a whole number the entry accepts
    (:data:`stmae.checkpoint_peek.RECORDED`)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not valid_recorded(key, value):
        minimum, unit = RECORDED[key]
        raise CheckpointError(f"{source} has an invalid '{key}' {value!r} (expected {unit} >= {minimum})")
    return int(value)


def processing_size_of(obj: Mapping[str, Any], source: str = "checkpoint") -> int | None:
    """The ``processing_size`` entry of a checkpoint dict (see :func:`recorded_entry`)."""
    return recorded_entry(obj, PROCESSING_SIZE_KEY, source)


def checkpoint_entry(path: str | Path, key: str) -> int | None:
    """Read only what a checkpoint records for ``key`` (None: not recorded)."""
    return recorded_entry(read_checkpoint_file(path), key, source=str(path))


def checkpoint_processing_size(path: str | Path) -> int | None:
    """Read only what a checkpoint says about its processing size (None: not recorded)."""
    return checkpoint_entry(path, PROCESSING_SIZE_KEY)


def checkpoint_mem_every(path: str | Path) -> int | None:
    """Read only what a checkpoint says about its memory interval (None: not recorded)."""
    return checkpoint_entry(path, MEM_EVERY_KEY)


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


def expected_state(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict an STMAE of ``config`` has, as shapes only: built on the ``meta``
    device, so no memory is allocated whatever the config asks for."""
    with torch.device("meta"):
        return STMAE(config).state_dict()


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError if a floating tensor holds NaN or Inf (a diverged or damaged
    checkpoint would give garbage masks)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{source} holds NaN or Inf values (tensor {bad[0]}{more}); it is damaged or from a "
            f"diverged training run: use an earlier checkpoint",
            details="tensors with NaN or Inf values:\n" + "\n".join(f"  {k}" for k in bad),
        )


def check_state_dict(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Strict check: raise CheckpointError naming missing, unexpected and mis-shaped
    tensors in one line (``details``: the full listing)."""
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
    summary = []
    if missing:
        parts.append(listing("missing tensors", missing))
        summary.append(f"{len(missing)} missing tensor(s) (e.g. {missing[0]})")
    if unexpected:
        parts.append(listing("unexpected tensors", unexpected))
        summary.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
    if misshaped:
        parts.append(listing("tensors with the wrong shape", misshaped))
        summary.append(f"{len(misshaped)} tensor(s) with the wrong shape (e.g. {misshaped[0]})")
    note = ("a checkpoint without a 'config' entry is read as the published preset; "
            "toolkit checkpoints name their config")
    parts.append(f"  ({note})")
    raise CheckpointError(
        f"{source} does not match the STMAE network: {'; '.join(summary)} ({note})", details="\n".join(parts)
    )


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
    check_state_dict(expected_state(config), state, source=str(path))  # before allocating
    check_finite(state, source=str(path))
    model = STMAE(config)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    size, mem_every = (recorded_entry(extra, key, source=str(path)) for key in (PROCESSING_SIZE_KEY, MEM_EVERY_KEY))
    for key in RECORDED:
        extra.pop(key, None)
    return LoadedCheckpoint(model, config, has_config, widened, extra, size, mem_every)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the target folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", durable=True) as fh:
        torch.save(obj, fh)


def storage_state(
    state: Mapping[str, torch.Tensor], dtype: torch.dtype | None
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """``state`` (CPU tensors) with its floating tensors cast to ``dtype`` for storage
    (None: as they are), except those whose finite values the cast would turn into Inf
    (e.g. a BatchNorm running_var of 1e6 in float16, whose largest value is 65504): those
    keep their own dtype, since :func:`load_checkpoint` refuses non-finite tensors and
    loads any mix of floating dtypes. Returns (the state to save, {name of each tensor kept
    in its own dtype: its largest absolute value})."""
    out: dict[str, torch.Tensor] = {}
    kept: dict[str, float] = {}
    for name, value in state.items():
        if dtype is None or not value.is_floating_point() or value.dtype == dtype:
            out[name] = value
            continue
        cast = value.to(dtype)
        if bool(torch.isfinite(value).all()) and not bool(torch.isfinite(cast).all()):
            out[name] = value
            kept[name] = float(value.abs().max())
        else:
            out[name] = cast
    return out, kept


def save_checkpoint(
    path: str | Path,
    model: STMAE,
    extra: Mapping[str, Any] | None = None,
    processing_size: int | None = None,
    storage_dtype: torch.dtype | None = None,
    mem_every: int | None = None,
) -> dict[str, float]:
    """Write ``{'network': state_dict, 'config': ..., 'format': 'stmae', ...extra}``
    atomically. The 'network' entry is in the published format. ``processing_size``: the
    shorter side (pixels) of the frames the network was trained/evaluated at, recorded so
    that ``--size auto`` runs it there. ``mem_every``: the memory interval (frames) to run
    it with, recorded for ``--mem-every auto``. ``storage_dtype`` (e.g. torch.float16; None: the
    model's own): floating tensors are stored in it, except those whose values do not fit
    it (see :func:`storage_state`). Returns {tensor kept in its own dtype: its largest
    absolute value} (empty when every tensor fits)."""
    reserved = {"network", "config", "format", "format_version", *RECORDED}
    clash = reserved & set(extra or {})
    if clash:
        raise ValueError(f"extra entries may not use the reserved keys {sorted(clash)}")
    network, kept = storage_state({k: v.detach().cpu() for k, v in model.state_dict().items()}, storage_dtype)
    obj: dict[str, Any] = {
        "network": network,
        "config": model.config.to_dict(),
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
    }
    for key, value in ((PROCESSING_SIZE_KEY, processing_size), (MEM_EVERY_KEY, mem_every)):
        if value is not None:
            if not valid_recorded(key, value):
                minimum, unit = RECORDED[key]
                raise ValueError(f"{key} must be an integer >= {minimum} {unit}, got {value!r}")
            obj[key] = int(value)
    obj.update(extra or {})
    atomic_torch_save(obj, path)
    return kept
