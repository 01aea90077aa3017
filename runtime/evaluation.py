"""DAVIS evaluation as a library function: segment sequences, score J and F.

Layout of a DAVIS root: ``JPEGImages/<resolution>/<seq>/*.jpg``,
``Annotations/<resolution>/<seq>/*.png`` (one per frame), ``ImageSets/<year>/<split>.txt``.
Each sequence is segmented from its first annotation with a fresh
:class:`runtime.engine.session.VideoSession`, then scored with :mod:`runtime.metrics` (DAVIS
semi-supervised protocol: first and last frames excluded; dataset means over objects).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from stmae.atomic import remove_stale_temps
from stmae.outputs import prepare_output_folder, refuse_alias, write_record, written_by

from .backends.base import Backend
from .config import SessionConfig
from .errors import InputError, output_refusals_as_input_errors
from .io.mask_io import existing_masks, read_mask, write_mask
from .sequence_scores import EvalResult, SequenceResult, named_sequence, open_sequence, score_sequence
from .engine.session import VideoSession


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


def refuse_existing_predictions(out_dir: str | Path, sequences: Sequence[str]) -> None:
    """Raise InputError if ``out_dir/<seq>/`` already holds masks for any sequence."""
    for name in sequences:
        existing = existing_masks(Path(out_dir) / name)
        if existing:
            raise InputError(
                f"{Path(out_dir) / name} already has {len(existing)} mask(s) (e.g. {existing[0].name}); "
                f"pass --overwrite to replace them, or choose another output folder"
            )


TOOL = "stmae-eval"
RESULTS_CSV = "results.csv"


def check_eval_output(out_dir: str | Path, dataset_root: str | Path, sequences: Sequence[str], overwrite: bool) -> Path:
    """Check ``out_dir`` before any work: not inside or holding the dataset; earlier
    results only replaced with ``overwrite`` and only if stmae-eval wrote them (its output
    record is there); created and proven writable. Writes the record."""
    out = Path(out_dir)
    with output_refusals_as_input_errors():
        refuse_alias(out, "--out", {"--dataset": dataset_root})
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; choose a folder for the results")
    results = out / RESULTS_CSV
    earlier = [results] if results.exists() else []
    earlier += [m for name in sequences for m in existing_masks(out / name)]
    if earlier and not overwrite:
        if results.exists():
            raise InputError(f"{results} already exists; pass --overwrite to replace it")
        refuse_existing_predictions(out, sequences)
    if earlier and not written_by(out, TOOL):
        raise InputError(
            f"--overwrite replaces only results that {TOOL} wrote, and {out} holds {earlier[0].name} "
            f"without a {TOOL} record; it was left untouched: choose another --out"
        )
    with output_refusals_as_input_errors():
        prepare_output_folder(out, "--out")
    remove_stale_temps(out)
    write_record(out, TOOL, dataset=str(Path(dataset_root).resolve()))
    return out


def _sequence_paths(root: Path, resolution: str, name: str) -> tuple[Path, Path]:
    frames = root / "JPEGImages" / resolution / name
    annotations = root / "Annotations" / resolution / name
    for folder in (frames, annotations):
        if not folder.is_dir():
            raise InputError(f"sequence {name!r}: {folder} does not exist (is --resolution right?)")
    return frames, annotations


def evaluate_sequences(
    backend: Backend,
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
) -> EvalResult:
    """Segment and score DAVIS sequences.

    backend: any runtime backend; sequences: names under JPEGImages/<resolution>;
    out_dir: if given, predictions are written as palette PNGs to ``out_dir/<seq>/``
    (refused if a sequence folder already has masks, unless ``overwrite``);
    max_frames: score only the first frames of each sequence (quick validation; the
    protocol then applies to the shortened sequence); on_frame(seq, frame_index) is called
    after every frame; streams: sequences segmented together by the batched engine
    (:mod:`runtime.evaluation_streams`; the same masks as one at a time).
    Returns an :class:`EvalResult`.
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
    if streams > 1:
        from .evaluation_streams import evaluate_streams

        return EvalResult(evaluate_streams(backend, paths, config, out, max_frames, on_frame, streams))
    results = []
    for name in sequences:
        frames_dir, gt_dir = paths[name]
        with named_sequence(name):
            results.append(
                _evaluate_one(backend, name, frames_dir, gt_dir, config, out, max_frames, on_frame)
            )
    return EvalResult(tuple(results))


def _evaluate_one(
    backend: Backend,
    name: str,
    frames_dir: Path,
    gt_dir: Path,
    config: SessionConfig,
    out: Path | None,
    max_frames: int | None,
    on_frame: Callable[[str, int], None] | None,
) -> SequenceResult:
    frames, names, first_mask, palette = open_sequence(name, frames_dir, gt_dir, out, max_frames)
    session = VideoSession(backend, config)
    predictions, truths = [], []
    start = time.perf_counter()
    for i, (frame_name, frame) in enumerate(frames):
        if i >= len(names):
            break
        result = session.step(frame, first_mask if i == 0 else None)
        predictions.append(result.labels)
        gt, _ = read_mask(gt_dir / f"{frame_name}.png")
        truths.append(gt)
        if out is not None:
            write_mask(out / name / f"{frame_name}.png", result.labels, palette)
        if on_frame is not None:
            on_frame(name, i)
    return score_sequence(name, predictions, truths, time.perf_counter() - start)
