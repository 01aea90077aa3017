"""How the engine decodes frame files: on the CPU by default, ahead of the step.

- ``cpu`` (the default): libjpeg (libjpeg-turbo) through PIL, the decoder of
  :class:`runtime.io.frames.FrameFolder` (:func:`runtime.io.frames.read_frame`), run on a
  thread pool a few frames ahead of the step (PIL releases the GIL while it decodes) by
  :class:`runtime.io.pipeline.FrameLoop`, the loop of the applications and of the bench.
  Frames are (H, W, 3) uint8 numpy arrays, bit for bit those of ``stmae-segment`` (and of
  OpenCV's decoder, the same libjpeg-turbo).
- ``nvjpeg`` (opt-in, CUDA): ``torchvision.io.decode_jpeg`` on the GPU in batches; the
  frames never exist as host arrays. nvJPEG upsamples chroma differently from libjpeg, so
  its pixels differ slightly and a sensitive model's masks with them (issue 21: mIoU 0.94
  against CPU-decoded frames with the small model); choose it knowingly.

:func:`frames_for` gives a folder's frames by the chosen decoder (the folder itself for
``cpu``); :func:`decode_cpu` and :func:`decode_jpegs` decode files one by one or in a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..cpus import usable_cpus
from ..errors import InputError
from ..io.frames import FrameFolder, read_frame
from ..io.overlap import Prefetcher

JPEG_SUFFIXES = (".jpg", ".jpeg")
DECODERS = ("cpu", "nvjpeg")
DEFAULT_DECODER = "cpu"


def gpu_decode_available(device: torch.device | str) -> bool:
    """True on a CUDA device with torchvision's decode_jpeg."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


def check_decoder(decoder: str, device: torch.device | str) -> str:
    """The decoder name if it can run for ``device``; InputError says why not."""
    if decoder not in DECODERS:
        raise InputError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if decoder == "nvjpeg" and not gpu_decode_available(device):
        raise InputError(f"--decoder nvjpeg needs a CUDA device and torchvision's decode_jpeg (device {device}); "
                         f"use --decoder cpu")
    return decoder


def default_workers() -> int:
    """Decode threads: the usable cores, at most 16."""
    return max(1, min(16, usable_cpus()))


def decode_cpu(path: str | Path) -> np.ndarray:
    """One frame file -> (H, W, 3) uint8 RGB, as :class:`FrameFolder` decodes it."""
    return read_frame(path)


def decode_jpegs(paths: list[Path], device: torch.device | str) -> list[torch.Tensor]:
    """Decode JPEG files on ``device`` with nvJPEG in one batched call -> [(H, W, 3) uint8]
    RGB tensors on the device (views of (3, H, W) images)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=torch.device(device))
    except RuntimeError as exc:
        raise InputError(f"cannot decode the JPEG frames {paths[0].name}..{paths[-1].name} on the GPU ({exc})") from None
    return [image.permute(1, 2, 0) for image in images]


class _NvjpegFolder:
    """The frames of a JPEG :class:`FrameFolder` decoded by nvJPEG, ``batch`` files per
    call, ahead in a thread; iterates (name, (H, W, 3) uint8 tensor) with the folder's
    size check."""

    def __init__(self, folder: FrameFolder, device: torch.device | str, batch: int) -> None:
        if any(p.suffix.lower() not in JPEG_SUFFIXES for p in folder.paths):
            raise InputError(f"{folder.folder} has frames that are not JPEG; --decoder nvjpeg takes JPEG folders")
        self.folder, self.device, self.batch = folder, device, batch
        self.names, self.size = folder.names, folder.size

    def __len__(self) -> int:
        return len(self.folder)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        paths = self.folder.paths
        chunks = (paths[i : i + self.batch] for i in range(0, len(paths), self.batch))
        # The next batches decode in a thread while this one is used (two batches ahead).
        with Prefetcher((decode_jpegs(chunk, self.device) for chunk in chunks), depth=2) as decoded:
            index = 0
            for frames in decoded:
                for frame in frames:
                    if tuple(frame.shape[:2]) != tuple(self.size):
                        raise InputError(f"frame {paths[index]} changed size while reading")
                    yield self.names[index], frame
                    index += 1


def frames_for(folder: FrameFolder, device: torch.device | str, batch: int = 8, decoder: str = DEFAULT_DECODER):
    """A frame folder's (name, frame) pairs as ``decoder`` gives them.

    'cpu' (the default): the folder itself, numpy frames decoded by libjpeg through PIL
    where they are used (:class:`runtime.io.pipeline.FrameLoop` decodes a folder on its
    thread pool, ahead of the step). 'nvjpeg': uint8 tensors on ``device``, ``batch``
    files per call, decoded ahead in a thread (JPEG folders on CUDA only, else InputError).
    """
    check_decoder(decoder, device)
    if decoder == "cpu":
        return folder
    return _NvjpegFolder(folder, device, batch)
