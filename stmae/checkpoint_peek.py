"""Read a checkpoint's small metadata (its recorded processing size and memory interval)
without importing torch.

A command line needs the processing size early, to check its paths and outputs before the
model loads: importing torch alone takes seconds on a busy machine. A checkpoint written by
``torch.save`` is a zip archive whose ``data.pkl`` holds the object tree; its tensors are
persistent references to storages kept elsewhere in the archive. This module unpickles that
tree with an allow-list narrower than ``torch.load(weights_only=True)``: plain containers and
numbers, and in place of tensors an inert :class:`TensorRef` (no storage is ever read). Any
other class, a legacy (non-zip) checkpoint or a damaged file gives :data:`UNKNOWN`, and the
caller falls back to :mod:`stmae.checkpoint` (which imports torch and reports the problem
properly).
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

PROCESSING_SIZE_KEY = "processing_size"  # stmae.checkpoint.PROCESSING_SIZE_KEY
MEM_EVERY_KEY = "mem_every"  # stmae.checkpoint.MEM_EVERY_KEY
# The integer entries a checkpoint (and an export's manifest) may record for running its
# network: the smallest value each may take, and its unit.
RECORDED = {PROCESSING_SIZE_KEY: (16, "pixels"), MEM_EVERY_KEY: (1, "frames")}
UNKNOWN = object()  # the peek could not decide: ask stmae.checkpoint
MAX_PICKLE_BYTES = 64 << 20  # a checkpoint's object tree is a few hundred KB; more is not ours


class TensorRef:
    """Stands in for a tensor: it records nothing and reads no storage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _storage(*args: Any) -> None:
    return None


_TORCH_NAMES = {
    ("torch._utils", "_rebuild_tensor_v2"): TensorRef,
    ("torch._utils", "_rebuild_tensor"): TensorRef,
    ("torch._utils", "_rebuild_parameter"): TensorRef,
}
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) in _TORCH_NAMES:
            return _TORCH_NAMES[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _storage
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint peek")

    def persistent_load(self, pid: Any) -> None:
        return None  # a storage: never read


def valid_recorded(key: str, value: Any) -> bool:
    """Whether ``value`` is a whole number (not a bool) that the recorded entry ``key``
    accepts (:data:`RECORDED`)."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= RECORDED[key][0]


def _peek_tree(path: str | Path) -> Any:
    """The checkpoint's object tree with tensors replaced by :class:`TensorRef`, or
    :data:`UNKNOWN`."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pickles) != 1 or archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
                return UNKNOWN
            with archive.open(pickles[0]) as handle:
                return _Unpickler(handle).load()
    except Exception:  # anything unusual: the torch path decides and explains
        return UNKNOWN


def peek_entry(path: str | Path, key: str) -> int | None | object:
    """A recorded integer entry of a checkpoint (``processing_size`` or ``mem_every``): the
    int, None when the checkpoint has no such entry, or :data:`UNKNOWN` when this cannot be
    told without torch (a legacy format, a tensor-valued entry, a value
    :mod:`stmae.checkpoint` would refuse, an unreadable file)."""
    if key not in RECORDED:
        raise KeyError(f"{key!r} is not a recorded checkpoint entry ({sorted(RECORDED)})")
    obj = _peek_tree(path)
    if not isinstance(obj, dict):
        return UNKNOWN
    value = obj.get(key)
    if value is None:
        # the published format nests nothing else that records these
        return None if key not in obj else UNKNOWN
    if not valid_recorded(key, value):
        return UNKNOWN
    return int(value)


def peek_processing_size(path: str | Path) -> int | None | object:
    """The ``processing_size`` a checkpoint records (see :func:`peek_entry`)."""
    return peek_entry(path, PROCESSING_SIZE_KEY)


def peek_mem_every(path: str | Path) -> int | None | object:
    """The ``mem_every`` a checkpoint records (see :func:`peek_entry`)."""
    return peek_entry(path, MEM_EVERY_KEY)
