"""JPEG frame folders decoded on the GPU in batches (``torchvision.io.decode_jpeg`` with
``device='cuda'``, nvJPEG): the frames never exist as host arrays, and the engine copies
them straight into its static frame buffer. The CPU path (:mod:`runtime.io.frames`) is
unchanged; this is used only where it pays: a CUDA device and a folder of JPEG files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from ..errors import InputError
from ..io.frames import FrameFolder

JPEG_SUFFIXES = (".jpg", ".jpeg")


def gpu_decode_available(device: torch.device | str) -> bool:
    """True on a CUDA device with torchvision's decode_jpeg."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


def decode_jpegs(paths: list[Path], device: torch.device | str) -> list[torch.Tensor]:
    """Decode JPEG files on ``device`` in one batched call -> [(H, W, 3) uint8] RGB
    tensors on the device (views of (3, H, W) images)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=torch.device(device))
    except RuntimeError as exc:
        raise InputError(f"cannot decode the JPEG frames {paths[0].name}..{paths[-1].name} on the GPU ({exc})") from None
    return [image.permute(1, 2, 0) for image in images]


class GpuJpegFolder:
    """The frames of a JPEG :class:`FrameFolder`, decoded on ``device`` ``batch`` at a
    time; iterates (name, (H, W, 3) uint8 tensor on the device)."""

    def __init__(self, folder: FrameFolder, device: torch.device | str, batch: int = 8) -> None:
        if any(p.suffix.lower() not in JPEG_SUFFIXES for p in folder.paths):
            raise InputError(f"{folder.folder} has frames that are not JPEG; GPU decoding takes JPEG folders")
        self.folder, self.device, self.batch = folder, torch.device(device), batch
        self.names, self.size = folder.names, folder.size

    def __len__(self) -> int:
        return len(self.folder)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        paths = self.folder.paths
        for start in range(0, len(paths), self.batch):
            chunk = paths[start : start + self.batch]
            for path, name, frame in zip(chunk, self.names[start : start + self.batch], decode_jpegs(chunk, self.device)):
                if tuple(frame.shape[:2]) != tuple(self.size):
                    raise InputError(f"frame {path} changed size while reading")
                yield name, frame


def frames_for(folder: FrameFolder, device: torch.device | str, batch: int = 8):
    """GPU-decoded frames when that pays (CUDA, all JPEG), else the folder itself."""
    if gpu_decode_available(device) and all(p.suffix.lower() in JPEG_SUFFIXES for p in folder.paths):
        return GpuJpegFolder(folder, device, batch)
    return folder
