"""Label-map PNGs: read masks (palette, grey or binary), write palette PNGs atomically.

Masks are written with PIL in mode 'P' with the palette kept (never through OpenCV,
which would drop it). A PNG appears whole or not at all: it is written to a temp file in
the same folder, then renamed over the target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stmae.atomic import atomic_write, is_temp_name

from .errors import InputError


def davis_palette() -> list[int]:
    """The DAVIS (PASCAL VOC) palette: 256 RGB triplets flattened (768 ints)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def read_mask(path: str | Path) -> tuple[np.ndarray, list[int] | None]:
    """Read a label map. Returns (labels (H, W) uint8, palette or None).

    Palette PNGs give their indices; greyscale masks give their values, except binary
    0/255 masks (e.g. DAVIS 2016), which give 0/1. Colour masks are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            palette = img.getpalette() if mode == "P" else None
            if mode in ("P", "L"):
                labels = np.array(img, dtype=np.uint8)
            elif mode == "1":
                labels = np.array(img, dtype=np.uint8)
            else:
                raise InputError(
                    f"mask {path} is a {mode} image; give a label map (palette 'P' or greyscale "
                    f"PNG with one value per object, 0 = background)"
                )
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"mask {path} cannot be read as an image ({exc})") from None
    if mode == "L":
        values = np.unique(labels)
        if values.size and set(values.tolist()) <= {0, 255}:
            labels = (labels == 255).astype(np.uint8)
    if palette is not None:
        palette = (palette + [0] * 768)[:768]
    return labels, palette


def write_mask(path: str | Path, labels: np.ndarray, palette: list[int] | None = None) -> None:
    """Write labels (H, W) uint8 as a palette PNG at ``path``, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be (H, W) uint8, got {labels.dtype} {labels.shape}")
    path = Path(path)
    img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    img.putpalette(palette if palette is not None else davis_palette())
    with atomic_write(path, "wb") as fh:
        img.save(fh, format="PNG")


def existing_masks(folder: str | Path) -> list[Path]:
    """PNG files directly in ``folder``, in natural order (empty if it does not exist);
    temp files of unfinished writes (:mod:`stmae.atomic`) are not listed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file() and not is_temp_name(p.name)),
        key=lambda p: natural_key(p.name),
    )
