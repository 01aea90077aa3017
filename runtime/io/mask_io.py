"""Label-map PNGs: read masks (palette, grey or binary), write palette PNGs atomically.

Masks are written with PIL in mode 'P' with the palette kept (never through OpenCV,
which would drop it). A PNG appears whole or not at all: it is written to a temp file in
the same folder, then renamed over the target (:mod:`stmae.atomic`; with a
:class:`stmae.atomic.GroupCommit` the fsync is shared by many masks). PNG is lossless at
every compression level: the level (0 none .. 9 smallest, default 1 = fast) changes the
file's size and the time to write it, never the labels read back.

Reading refuses what cannot be a label map: lossy files (JPEG/WebP), and masks whose
labels look like compression or anti-aliasing noise (most labels only along edges: a JPEG
round trip turns a 2-object mask into dozens of "objects"). Label 255 is *void* (DAVIS:
"ignore"): never an object; :func:`without_void` turns it into background for tracking,
and :mod:`runtime.metrics` leaves void pixels out of the scores.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stmae.atomic import GroupCommit, atomic_write, is_temp_name

from ..errors import InputError
from .frames import natural_key, open_image

VOID_LABEL = 255
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP", "JPEG2000")
DEFAULT_PNG_LEVEL = 1  # zlib level: 1 writes about twice as fast as PIL's default 6


def check_png_level(level) -> int:
    """``level`` if it is a PNG (zlib) compression level 0..9; ValueError otherwise."""
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 9:
        raise ValueError(f"png_level must be an integer from 0 (no compression) to 9 (smallest files), "
                         f"{DEFAULT_PNG_LEVEL} (fast) by default; got {level!r}")
    return level


def labels_present(labels: np.ndarray) -> list[int]:
    """Object labels of a label map: every value but 0 (background) and 255 (void)."""
    return [int(v) for v in np.unique(labels) if v != 0 and v != VOID_LABEL]


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
    return decode_mask(path, f"mask {path}")


def decode_mask(source, what: str) -> tuple[np.ndarray, list[int] | None]:
    """:func:`read_mask` of an opened source: a path or a binary file object (e.g.
    ``io.BytesIO`` of an uploaded PNG); ``what`` names it in the messages ("mask x.png")."""
    try:
        with open_image(source, what) as img:
            if img.format in LOSSY_FORMATS:
                raise InputError(
                    f"{what} is a {img.format} file: lossy compression changes the label values "
                    f"along object edges; save masks as PNG (palette or greyscale, one value per object)"
                )
            img.load()
            mode = img.mode
            palette = img.getpalette() if mode == "P" else None
            if mode in ("P", "L"):
                labels = np.array(img, dtype=np.uint8)
            elif mode == "1":
                labels = np.array(img, dtype=np.uint8)
            else:
                raise InputError(
                    f"{what} is a {mode} image; give a label map (palette 'P' or greyscale "
                    f"PNG with one value per object, 0 = background)"
                )
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{what} cannot be read as an image ({exc})") from None
    if mode == "L":
        values = np.unique(labels)
        if values.size and set(values.tolist()) <= {0, 255}:
            labels = (labels == 255).astype(np.uint8)
    refuse_noisy_labels(labels, what.removeprefix("mask "))
    if palette is not None:
        palette = (palette + [0] * 768)[:768]
    return labels, palette


def without_void(labels: np.ndarray) -> np.ndarray:
    """``labels`` with void pixels (255) set to background (0); the same array if none."""
    void = labels == VOID_LABEL
    if not void.any():
        return labels
    out = labels.copy()
    out[void] = 0
    return out


def edge_only_labels(labels: np.ndarray) -> list[int]:
    """Non-zero, non-void labels with fewer than half their pixels inside a 3x3 patch of
    their own label: what lossy compression and anti-aliasing leave along edges."""
    padded = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    interior = np.ones(labels.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            interior &= padded[dy:dy + h, dx:dx + w] == labels
    counts = np.bincount(labels.ravel(), minlength=256)
    inside = np.bincount(labels[interior].ravel(), minlength=256)
    return [v for v in range(1, 255) if counts[v] and inside[v] * 2 < counts[v]]


def refuse_noisy_labels(labels: np.ndarray, path: str | Path) -> None:
    """Refuse a label map whose labels are mostly edge noise (at least 3 such labels, and
    more of them than solid ones): a JPEG round trip or an anti-aliased drawing."""
    present = [int(v) for v in np.unique(labels) if 0 < v < VOID_LABEL]
    if len(present) < 3:
        return
    noisy = edge_only_labels(labels)
    if len(noisy) >= 3 and len(noisy) > len(present) - len(noisy):
        raise InputError(
            f"mask {path} has {len(present)} label values, {len(noisy)} of them only along edges: it looks "
            f"lossy (JPEG) or anti-aliased, which would make each grey level an object; save the "
            f"original label map as PNG without smoothing (palette or greyscale, one value per object)"
        )


def write_mask(path: str | Path, labels: np.ndarray, palette: list[int] | None = None,
               level: int = DEFAULT_PNG_LEVEL, group: GroupCommit | None = None) -> None:
    """Write labels (H, W) uint8 as a palette PNG at ``path``, atomically; ``level``: zlib
    compression 0..9; ``group``: made durable and put in place with the group's next
    flush (:class:`stmae.atomic.GroupCommit`) instead of an fsync of its own."""
    data = encode_mask(labels, palette, level)
    with atomic_write(Path(path), "wb", group=group) as fh:
        fh.write(data)


def encode_mask(labels: np.ndarray, palette: list[int] | None = None, level: int = DEFAULT_PNG_LEVEL) -> bytes:
    """Labels (H, W) uint8 as the bytes of a palette PNG (what :func:`write_mask` writes);
    ``palette``: 768 ints (None: the DAVIS palette); ``level``: zlib compression 0..9."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be (H, W) uint8, got {labels.dtype} {labels.shape}")
    level = check_png_level(level)
    img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    img.putpalette(palette if palette is not None else davis_palette())
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


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
