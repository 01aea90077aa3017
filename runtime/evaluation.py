"""DAVIS evaluation as a library function: segment sequences, score J and F.

Layout of a DAVIS root: ``JPEGImages/<resolution>/<seq>/*.jpg``,
``Annotations/<resolution>/<seq>/*.png`` (one per frame), ``ImageSets/<year>/<split>.txt``.
Each sequence is segmented from its first annotation in a stream of its own, through the
pipelined loop (:mod:`runtime.evaluation_streams`, :mod:`runtime.io.pipeline`), then scored
with :mod:`runtime.metrics` (DAVIS semi-supervised protocol: first and last frames
excluded; dataset means over objects).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from stmae.outputs import written_by

from .config import SessionConfig
from .errors import InputError, output_refusals_as_input_errors
from .io.gate import begin_run, check_output
from .io.mask_io import existing_masks
from .sequence_scores import EvalResult, SequenceResult  # noqa: F401 - SequenceResult: public name here

if TYPE_CHECKING:  # the engine imports torch; the checks above answer before it loads
    from .backends.base import Backend
    from .io.pipeline import PipelineOptions


def read_split(dataset_root: str | Path, split: str, year: str | None = None) -> list[str]:
    """Sequence names of ``ImageSets/<year>/<split>.txt`` (year: the only one holding the
    split if None)."""
    sets = Path(dataset_root) / "ImageSets"
    if year is not None:
        candidates = [sets / year / f"{split}.txt"]
    else:
        candidates = sorted(sets.glob(f"*/{split}.txt"))
    found = [c for c in candidates if c.is_file()]
    if not found:
        where = sets / (year or "<year>") / f"{split}.txt"
        existing = sorted(f"{p.parent.name}/{p.stem}" for p in sets.glob("*/*.txt"))
        raise InputError(
            f"split {split!r} not found: no {where}; splits here (year/split): "
            f"{', '.join(existing) or 'none'} (or pass --sequences a,b,c)"
        )
    if len(found) > 1:
        years = ", ".join(c.parent.name for c in found)
        raise InputError(f"split {split!r} exists for several years ({years}); choose one with --year")
    names = [line.strip() for line in found[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise InputError(f"{found[0]} lists no sequence")
    return names


TOOL = "stmae-eval"
RESULTS_CSV = "results.csv"


def check_eval_output(out_dir: str | Path, dataset_root: str | Path, sequences: Sequence[str], overwrite: bool,
                      other_inputs: dict[str, str | Path | None] | None = None, create: bool = True) -> Path:
    """Check ``out_dir`` before any work, through the output gate
    (:func:`runtime.io.gate.check_output`): not inside or holding the dataset; earlier
    results only replaced with ``overwrite`` and only if stmae-eval wrote them (its output
    record is there); created and proven writable. other_inputs: more inputs ({flag: path},
    e.g. the ``--checkpoint``). Then (``create``; else nothing is created or removed) the
    earlier run's outputs, as its record lists them, are removed and this run's record is
    written."""
    out = Path(out_dir)
    results = out / RESULTS_CSV
    earlier = [results] if results.is_file() else []
    earlier += [m for name in sequences for m in existing_masks(out / name)]
    with output_refusals_as_input_errors():
        check_output(out, "--out", {"--dataset": dataset_root, **(other_inputs or {})}, tool=TOOL, earlier=earlier,
                     owned=written_by(out, TOOL), overwrite=overwrite, noun="results", create=create)
    if not create:
        return out
    begin_run(out, TOOL, outputs=None, candidates=earlier, dataset=str(Path(dataset_root).resolve()))
    return out


def written_outputs(out_dir: str | Path, sequences: Sequence[str]) -> list[str]:
    """What a finished evaluation wrote into ``out_dir`` (relative paths): the masks of
    ``sequences`` and results.csv (the earlier run's were removed before it started)."""
    out = Path(out_dir)
    masks = [f"{name}/{m.name}" for name in sequences for m in existing_masks(out / name)]
    return masks + ([RESULTS_CSV] if (out / RESULTS_CSV).is_file() else [])


def _sequence_paths(root: Path, resolution: str, name: str) -> tuple[Path, Path]:
    frames = root / "JPEGImages" / resolution / name
    annotations = root / "Annotations" / resolution / name
    for folder in (frames, annotations):
        if not folder.is_dir():
            raise InputError(f"sequence {name!r}: {folder} does not exist (is --resolution right?)")
    return frames, annotations


def evaluate_sequences(
    backend: "Backend",
    dataset_root: str | Path,
    sequences: Sequence[str],
    resolution: str = "480p",
    out_dir: str | Path | None = None,
    session_config: SessionConfig | None = None,
    *,
    overwrite: bool = False,
    max_frames: int | None = None,
    on_frame: Callable[[str, int], None] | None = None,
    streams: int = 1,
    pipeline: "PipelineOptions | None" = None,
) -> EvalResult:
    """Segment and score DAVIS sequences.

    backend: any runtime backend; sequences: names under JPEGImages/<resolution>;
    out_dir: if given, predictions are written as palette PNGs to ``out_dir/<seq>/``
    (refused if a sequence folder already has masks, unless ``overwrite``);
    max_frames: score only the first frames of each sequence (quick validation; the
    protocol then applies to the shortened sequence); on_frame(seq, frame_index) is called
    after every frame; streams: sequences segmented together by the batched engine
    (:mod:`runtime.evaluation_streams`; the same masks as one at a time); pipeline: how
    frames are decoded ahead and masks written (PNG level, threads); every mask is on disk,
    synced, when this returns. Returns an :class:`EvalResult`.
    """
    if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
        raise InputError(f"streams must be a positive integer, got {streams!r}")
    root = Path(dataset_root)
    if not (root / "JPEGImages").is_dir():
        raise InputError(f"{root} is not a DAVIS root (no JPEGImages folder)")
    if not sequences:
        raise InputError("no sequence to evaluate")
    if max_frames is not None and max_frames < 3:
        raise InputError(f"max_frames must be at least 3 (first and last frames are not scored), got {max_frames}")
    config = session_config or SessionConfig()
    out = Path(out_dir) if out_dir is not None else None
    paths = {name: _sequence_paths(root, resolution, name) for name in sequences}
    if out is not None:
        check_eval_output(out, root, sequences, overwrite)
    from .engine.types import EngineOptions
    from .evaluation_streams import evaluate_streams

    if streams > 1:
        return EvalResult(evaluate_streams(backend, paths, config, out, max_frames, on_frame, streams,
                                           pipeline=pipeline))
    # One sequence at a time: the eager engine on frames decoded on the CPU, as a session.
    return EvalResult(evaluate_streams(backend, paths, config, out, max_frames, on_frame, 1,
                                       options=EngineOptions(), pipeline=pipeline, device_decode=False))
