"""What a corpus worker is built from and what it writes about each video: the picklable
:class:`WorkerSetup` (with its :class:`BackendSpec`), the fingerprint that makes results
comparable, a job's frames and checked annotations, and the done and failure records.

Shared by the one-video-at-a-time :class:`runtime.corpus.worker.Worker` and the batched
:class:`runtime.corpus.batch_worker.StreamBatch`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import SessionConfig
from ..errors import InputError
from ..export_manifest import sha256_file
from ..io.frames import FrameFolder, VideoFile, open_frames, truncation_warning
from ..io.mask_io import DEFAULT_PNG_LEVEL, check_png_level
from .jobs import VideoJob
from .records import utc_now

# Fault injection for tests, read by the driver (runtime.corpus.run) and passed to every
# worker in WorkerSetup.crash_at: "<video>:<frame>:<marker file>" makes the worker that
# reaches that frame of that video exit at once (os._exit, like a kill or the OOM killer),
# once: the marker file is created first, so the retry runs normally.
CRASH_ENV = "STMAE_TEST_CRASH"


@dataclass(frozen=True)
class BackendSpec:
    """What a worker needs to build its backend (see runtime.backends.create_backend)."""

    name: str = "torch"
    checkpoint: str | None = None
    export_dir: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    tf32: bool = False  # allow TF32 on CUDA (--allow-tf32)

    def model_hash(self) -> str:
        """sha256 of the checkpoint file, or of the export's manifest.json."""
        path = Path(self.checkpoint) if self.name == "torch" else Path(self.export_dir or ".") / "manifest.json"
        try:
            return sha256_file(path)
        except OSError as exc:
            raise InputError(f"cannot read {path} ({exc.strerror})") from None

    def with_device(self, device: str) -> "BackendSpec":
        return BackendSpec(self.name, self.checkpoint, self.export_dir, device, self.precision, self.tf32)


@dataclass(frozen=True)
class WorkerSetup:
    """backend: how to build the backend; config: the session settings; out: the corpus
    output folder; fingerprint: what makes results comparable (recorded with each video);
    max_frames: only the first N frames of each video; threads: torch CPU threads;
    streams: videos each worker steps together with the batched engine (1: one at a
    time); crash_at: fault injection for tests (see CRASH_ENV); png_level: zlib level of
    the mask PNGs (not a setting of the masks: every level gives the same labels)."""

    backend: BackendSpec
    config: SessionConfig
    out: Path
    fingerprint: dict = field(default_factory=dict)
    max_frames: int | None = None
    threads: int | None = None
    crash_at: str | None = None
    streams: int = 1
    png_level: int = DEFAULT_PNG_LEVEL

    def __post_init__(self) -> None:
        if not isinstance(self.streams, int) or self.streams < 1:
            raise ValueError(f"streams must be a positive integer, got {self.streams!r}")
        check_png_level(self.png_level)


def fingerprint_of(spec: BackendSpec, config: SessionConfig, max_frames: int | None) -> dict:
    """The settings a finished video's masks depend on (not the device or the runner)."""
    return {
        "backend": spec.name,
        "precision": spec.precision,
        "model_sha256": spec.model_hash(),
        "session": asdict(config),
        "max_frames": max_frames,
        # TF32 changes CUDA float32 results; recorded only when allowed, so that corpora
        # written before the setting existed (IEEE float32) still resume.
        **({"tf32": True} if spec.tf32 else {}),
    }


class _FirstFramesOfVideo(VideoFile):
    """A video file cut to its first ``limit`` frames."""

    def __init__(self, video: VideoFile, limit: int) -> None:
        self.__dict__.update(video.__dict__)
        self.limit = limit

    def __len__(self) -> int:
        return min(self.count_hint, self.limit)

    def __iter__(self):
        for index, item in enumerate(super().__iter__()):
            if index >= self.limit:
                return
            yield item


def first_frames(frames: FrameFolder | VideoFile, limit: int | None) -> FrameFolder | VideoFile:
    """``frames`` cut to its first ``limit`` frames (unchanged if None)."""
    if limit is None:
        return frames
    if isinstance(frames, FrameFolder):
        cut = copy.copy(frames)
        cut.paths, cut.names = frames.paths[:limit], frames.names[:limit]
        return cut
    return _FirstFramesOfVideo(frames, limit)


def crash_hook(spec: str | None, name: str):
    if not spec:
        return None
    video, frame, marker = spec.split(":", 2)
    if video != name:
        return None

    def hook(count: int) -> None:
        if count == int(frame) and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(17)

    return hook


def open_job(job: VideoJob, max_frames: int | None):
    """The frames (cut to ``max_frames``) and checked annotations of ``job``; InputError
    if a mask is wrong or none falls within the kept frames."""
    from ..segment_video import load_annotations

    frames = first_frames(open_frames(job.source), max_frames)
    annotations = load_annotations(frames, job.first_mask, job.masks_dir)
    if max_frames is not None:
        kept = set(frames.names) if isinstance(frames, FrameFolder) else {f"{i:05d}" for i in range(max_frames)}
        annotations = type(annotations)({k: v for k, v in annotations.masks.items() if k in kept},
                                        annotations.palette)
        if not annotations.masks:
            raise InputError(f"no mask within the first {max_frames} frames")
    return frames, annotations


def failure(name: str, exc: BaseException) -> dict:
    """The outcome of a video that raised ``exc``; out-of-memory errors are retriable."""
    import torch

    retriable = isinstance(exc, (MemoryError, torch.OutOfMemoryError))
    message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return {"name": name, "status": "failed", "error": message.splitlines()[0] if message else "",
            "retriable": retriable, "record": None}


def done_record(setup: WorkerSetup, job: VideoJob, frames: int, objects, seconds: float, started: str,
                host: str, missing: int = 0) -> dict:
    """The done record of ``job`` (written after its last mask). missing: frames its video
    container announced but that were not decoded (:func:`runtime.io.frames.missing_frames`);
    then ``warning`` has the same line the single-video path prints, and the run lists the
    video as truncated (:func:`truncated_entry`)."""
    spec = setup.backend
    return {
        "name": job.name,
        "source": str(job.source),
        "frames": frames,
        "frames_declared": frames + missing,
        "missing_frames": missing,
        "warning": truncation_warning(frames, missing),
        "objects": list(objects),
        "seconds": round(seconds, 4),
        "backend": spec.name,
        "device": spec.device,
        "precision": spec.precision,
        "model_sha256": setup.fingerprint.get("model_sha256"),
        "fingerprint": setup.fingerprint,
        "host": host,
        "pid": os.getpid(),
        "started_at": started,
        "finished_at": utc_now(),
    }


def truncated_entry(record: dict | None) -> dict | None:
    """``{"name", "reason", "frames_read", "frames_declared"}`` for run_summary.json if the
    done ``record`` is of a video that ended early, else None."""
    if not record or not record.get("missing_frames"):
        return None
    return {"name": record["name"], "reason": record.get("warning") or "truncated",
            "frames_read": record["frames"], "frames_declared": record.get("frames_declared")}
