"""The CPU default: a checkpoint runs through ONNX Runtime, from an fp32 export cached by the
checkpoint's sha256.

On a CPU, ONNX Runtime runs the two graphs faster than eager PyTorch, and it keeps its speed
on busy cores (its threads never spin-wait here). So ``--backend auto`` (the default of
``stmae-segment``, ``stmae-eval`` and live) on a CPU, given ``--checkpoint``, exports that
checkpoint once to fp32 ONNX (with the exporter's parity gate) into a user cache folder and
runs the export; later runs of the same checkpoint reuse it. ``--backend torch`` keeps the
PyTorch path; on CUDA the default is torch (its CUDA-graph engine).

The cache: ``$STMAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/stmae``, else ``~/.cache/stmae``;
one folder per checkpoint, ``exports/<sha256[:16]>-fp32/``, made under an exclusive lock (a
second process waits for the first one's export instead of making its own) and moved into
place whole, so a folder there is always a complete export. A folder whose manifest does not
verify (edited, truncated, of another checkpoint) is made again.

The exporter lives in the ``export`` package, which sits above ``runtime``: it is found
through the ``stmae.exporters`` entry point (name ``fp32``), never imported by name. Without
it (a runtime-only install) the default is torch, and the summary says why.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ENTRY_POINT_GROUP = "stmae.exporters"
ENTRY_POINT_NAME = "fp32"
PRECISION = "fp32"
AUTO = "auto"


@dataclass(frozen=True)
class BackendChoice:
    """What ``--backend auto`` resolved to.

    name: 'torch' or 'onnxruntime'; export_dir: the export it runs (None for torch);
    reason: a few words for the summary line (e.g. 'cached fp32 export, reused')."""

    name: str
    export_dir: Path | None
    reason: str

    def text(self) -> str:
        return f"backend {self.name} ({self.reason})"


def cache_root() -> Path:
    """The user cache folder of this toolkit (see the module docstring)."""
    if os.environ.get("STMAE_CACHE_DIR"):
        return Path(os.environ["STMAE_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "stmae"
    return Path.home() / ".cache" / "stmae"


def find_exporter() -> Callable[[Path, Path, Callable[[str], None]], None] | None:
    """The fp32 exporter registered under the ``stmae.exporters`` entry point, or None."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == ENTRY_POINT_NAME:
            try:
                return entry.load()
            except ImportError:
                return None
    return None


def _valid_export(folder: Path, sha256: str, precision: str = PRECISION) -> bool:
    """Whether ``folder`` holds a complete export of the checkpoint with this hash at this
    precision."""
    from .export_manifest import ExportManifestError, load_manifest

    if not (folder / "manifest.json").is_file():
        return False
    try:
        manifest = load_manifest(folder)
    except (ExportManifestError, OSError):
        return False
    return manifest.precision == precision and manifest.source_checkpoint.get("sha256") == sha256


def cached_export(checkpoint: str | Path, log: Callable[[str], None],
                  exporter: Callable[[Path, Path, Callable[[str], None]], None] | None = None,
                  root: Path | None = None, precision: str = PRECISION) -> tuple[Path, bool]:
    """The cache folder holding an export of ``checkpoint`` at ``precision``, made if needed.

    Returns (folder, reused). ``exporter``: the function that writes an export at that
    precision into a folder that does not exist yet (default: the entry point's fp32 one).
    Raises OSError when the cache cannot be written, and whatever the exporter raises."""
    exporter = exporter or find_exporter()
    if exporter is None:
        raise LookupError("no fp32 exporter is installed (the stmae 'export' package)")
    from .export_manifest import sha256_file

    sha = sha256_file(checkpoint)
    exports = (root or cache_root()) / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    folder = exports / f"{sha[:16]}-{precision}"
    with open(exports / f"{folder.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one exporter per checkpoint; the others wait and reuse
        if _valid_export(folder, sha, precision):
            return folder, True
        if folder.exists():
            log(f"the cached export in {folder} does not verify: exporting again")
            shutil.rmtree(folder)
        log(f"first run of this checkpoint here: exporting it to ONNX ({precision}, checked against "
            f"PyTorch) into {folder}; later runs reuse it (--backend torch skips this)")
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=exports))
        try:
            exporter(Path(checkpoint), staging / "export", log)
            if not _valid_export(staging / "export", sha, precision):
                raise RuntimeError(f"the exporter wrote no valid {precision} export of {checkpoint}")
            os.replace(staging / "export", folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder, False


def choose_backend(requested: str, device: str, checkpoint: str | None, export_dir: str | None,
                   log: Callable[[str], None], requested_by: str = "--backend") -> BackendChoice:
    """Resolve ``--backend``: an explicit name is kept; 'auto' is onnxruntime for
    ``--export-dir``, the cached fp32 export of ``--checkpoint`` on a CPU, torch otherwise
    (on CUDA, or when no exporter is installed or the export is refused: said in the
    reason and logged). requested_by: where an explicit name came from, for the reason."""
    if requested != AUTO:
        return BackendChoice(requested, Path(export_dir) if export_dir else None, requested_by)
    if export_dir:
        return BackendChoice("onnxruntime", Path(export_dir), "--export-dir")
    if not device.startswith("cpu"):
        return BackendChoice("torch", None, f"default on {device}")
    exporter = find_exporter()
    if exporter is None:
        log("the export package is not installed: running the checkpoint with PyTorch")
        return BackendChoice("torch", None, "no exporter installed")
    try:
        folder, reused = cached_export(checkpoint, log, exporter)
    except OSError as exc:
        log(f"cannot use the export cache ({exc}); set STMAE_CACHE_DIR to a writable folder. "
            "Running the checkpoint with PyTorch")
        return BackendChoice("torch", None, "export cache not writable")
    except RuntimeError as exc:  # the exporter's refusal (e.g. its parity gate); a bad checkpoint raises ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log(f"the fp32 export was refused ({first}): running the checkpoint with PyTorch")
        return BackendChoice("torch", None, "export refused")
    return BackendChoice("onnxruntime", folder, f"cached fp32 export, {'reused' if reused else 'made now'}")
