"""Runtime: video sessions with a bounded, device-resident memory bank, and backends.

Imports ``stmae``; reads export manifests, never imports ``export`` or ``train``.

Arranged by what it is:

- :mod:`runtime.engine`: the engine (host schedule, static-shape device step, CUDA graphs,
  the batched :class:`StreamEngine`, :class:`VideoSession`, pre/post-processing, GPU decode).
- :mod:`runtime.io`: frames in, masks and overlays out, decode/write overlapped with compute.
- the applications beside them: ``segment_video``, ``evaluation``, ``corpus``, ``live``,
  ``bench``, and their ``cli`` modules.

- :class:`runtime.VideoSession` / :class:`runtime.FrameResult`: segment a
  video frame by frame (``step(frame, mask=None, objects=None)``).
- :class:`runtime.config.SessionConfig`: mem_every, top_k, max_memory_frames, size.
- :class:`runtime.engine.StreamEngine`: several videos stepped together (the batched
  engine): host policy in :mod:`runtime.engine.schedule`, device step in :mod:`runtime.engine.device_step`.
- :class:`runtime.engine.object_registry.ObjectRegistry`.
- :func:`runtime.backends.create_backend`: 'torch', 'onnxruntime', 'tensorrt'.
- :func:`runtime.evaluation.evaluate_sequences`: DAVIS J and F of a backend.
- :func:`runtime.corpus.run.run_corpus`: many videos on local worker processes or Ray
  actors, resumable, with retries and a summary.
- :func:`runtime.live.realtime.segment_live`: live streams and cameras, real-time mode.
"""

from .config import SessionConfig
from .errors import BackendUnavailable, InputError

__all__ = ["SessionConfig", "VideoSession", "FrameResult", "InputError", "BackendUnavailable"]


def __getattr__(name: str):
    # The session (and torch) load on first use, so that the command lines' --help, which
    # import this package, stay instant.
    if name in ("VideoSession", "FrameResult"):
        from .engine import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
