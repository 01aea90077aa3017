"""The engine: what runs the network over video, arranged from host policy down to device work.

- :mod:`.schedule`: :class:`StreamSchedule`, the host policy (which frame goes to memory,
  when objects arrive).
- :mod:`.device_step`: the static-shape device step (key encoder, readout, mask
  autoencoder), batched across lanes.
- :mod:`.cuda_graphs`: capture of that step in CUDA graphs (and ``torch.compile``).
- :mod:`.types`: what the engine takes and gives (:class:`EngineOptions`,
  :class:`StreamInput`, :class:`StreamResult`, ...).
- :mod:`.stream_engine`: :class:`StreamEngine`, several videos stepped together.
- :mod:`.session`: :class:`VideoSession`, one video frame by frame.
- :mod:`.object_registry`, :mod:`.transforms`, :mod:`.gpu_decode`.

``from runtime.engine import StreamEngine, EngineOptions`` works as before; the names load
on first use so that importing the package does not import torch.
"""

from __future__ import annotations

_EXPORTS = {
    "StreamEngine": "stream_engine", "EngineOptions": "types", "StreamInput": "types",
    "StreamResult": "types", "StreamMemory": "types", "PendingStep": "types", "StageTimer": "types",
    "VideoSession": "session", "FrameResult": "session", "check_step_input": "session",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
