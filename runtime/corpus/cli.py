"""Corpus options of ``stmae-segment`` / ``stmae-eval`` (``--videos``, ``--workers``,
``--ray`` ...) and the command bodies that run them; :mod:`runtime.cli` parses and calls."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from ..config import SessionConfig
from ..errors import BackendUnavailable, InputError


def add_corpus_options(parser: argparse.ArgumentParser, videos: bool = True) -> None:
    group = parser.add_argument_group("many videos (see docs/corpus.md)")
    if videos:
        group.add_argument("--videos", help="folder of video files and/or frame folders (masks in --masks-dir "
                           "MASKS/<name>.png or MASKS/<name>/), or a DAVIS / YouTube-VOS root")
        group.add_argument("--resolution", help="DAVIS layout: resolution folder (default 480p, else the only one)")
        group.add_argument("--max-frames", type=int, help="only the first N frames of each video (quick runs), or of a live source")
        group.add_argument("--streams", type=int, default=1,
                           help="videos each worker steps together with the batched engine (default 1; "
                           "same masks as one at a time)")
    group.add_argument("--workers", type=int, default=0,
                       help="N local worker processes (default: the videos one after the other in this process)")
    group.add_argument("--ray", metavar="local|auto|ADDRESS",
                       help="run on Ray: 'local' starts Ray here, 'auto' joins the cluster running here "
                       "(ray start --head), ADDRESS joins that cluster")
    group.add_argument("--ray-actors", type=int, help="Ray actors (default: one per GPU, or per --cpus-per-actor cores)")
    group.add_argument("--cpus-per-actor", type=int, default=1, help="CPU cores (torch threads) per CPU actor (default 1)")
    group.add_argument("--retries", type=int, default=2,
                       help="retries of a video whose worker died (killed, out of memory); default 2")


def wants_corpus(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "videos", None)) or args.workers > 0 or args.ray is not None


def _check(args: argparse.Namespace) -> None:
    if args.workers < 0:
        raise InputError(f"--workers must be 0 or more, got {args.workers}")
    if args.workers and args.ray is not None:
        raise InputError("give --workers N or --ray ADDRESS, not both")
    if args.streams < 1:
        raise InputError(f"--streams must be at least 1, got {args.streams}")
    for flag, value in (("--ray-actors", args.ray_actors), ("--cpus-per-actor", args.cpus_per_actor),
                        ("--max-frames", args.max_frames)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")


def _setup(args: argparse.Namespace, spec, config: SessionConfig, out: Path):
    from .worker_setup import WorkerSetup, fingerprint_of

    if args.ray is not None and args.device is None:
        spec = spec.with_device("auto")  # the cluster's GPUs if it has any (runtime.corpus.ray_runner)
    return WorkerSetup(spec, config, out, fingerprint_of(spec, config, args.max_frames), args.max_frames,
                       streams=args.streams, png_level=args.png_level)


def _model_inputs(args: argparse.Namespace) -> dict:
    return {"--checkpoint": args.checkpoint, "--export-dir": args.export_dir}


def _check_out(args: argparse.Namespace, roots: dict) -> None:
    """The output gate on ``--out`` against the input roots, before the videos are listed
    (an ``--out`` inside ``--videos`` is never taken for a video); nothing is created yet.
    :func:`runtime.corpus.run.run_corpus` runs it again with every video's files."""
    from .run import check_corpus_output

    check_corpus_output(Path(args.out), roots, create=False)


def _run(args, jobs, setup, roots: dict):
    from tqdm import tqdm

    from .run import run_corpus

    with tqdm(total=len(jobs), unit="video", disable=args.quiet, dynamic_ncols=True, file=sys.stderr) as bar:
        def on_video(result: dict) -> None:
            bar.update(1)
            if result["status"] != "done":
                bar.write(f"failed: {result['name']}: {result['error']}", file=sys.stderr)

        from .dispatch import RunnerError  # here: it imports the frame readers (torch); --help stays light

        try:
            return run_corpus(
                jobs, setup, workers=args.workers, ray=args.ray, ray_actors=args.ray_actors,
                cpus_per_actor=args.cpus_per_actor, retries=args.retries, overwrite=args.overwrite,
                on_video=on_video, inputs=roots,
            )
        except RunnerError as exc:
            if exc.user_error:
                raise BackendUnavailable(str(exc)) from None
            raise


def segment_corpus(args: argparse.Namespace, make_spec: Callable[[], object], config: SessionConfig) -> int:
    """``stmae-segment --videos DIR``: returns the exit status (1 if any video failed).
    make_spec: builds the workers' BackendSpec, after the input and output checks (it may
    export the checkpoint: runtime.fast_path)."""
    from .jobs import discover_jobs

    _check(args)
    if not args.videos:
        raise InputError("--workers/--ray segment many videos: give them with --videos DIR")
    if args.input or args.mask or args.overlay:
        raise InputError("--videos takes the place of --input/--mask/--overlay; give one or the other")
    roots = {"--videos": args.videos, "--masks-dir": args.masks_dir, **_model_inputs(args)}
    _check_out(args, roots)
    jobs = discover_jobs(args.videos, args.masks_dir, args.resolution)
    summary = _run(args, jobs, _setup(args, make_spec(), config, Path(args.out)), roots)
    _print_summary(summary, args)
    return 0 if summary.ok else 1


def _print_summary(summary, args: argparse.Namespace) -> None:
    for name, error in summary.failed.items():
        print(f"failed: {name}: {error}", file=sys.stderr)
    for name, entry in summary.truncated.items():  # the single-video path's warning, per video
        print(f"warning: {name}: {entry['reason']}", file=sys.stderr)
    backend = getattr(args, "backend_text", None)
    print(f"{summary.line()}{f', {backend}' if backend else ''}")
    print(f"summary: {summary.out / 'run_summary.json'}")


def eval_corpus(args: argparse.Namespace, make_spec: Callable[[], object], config: SessionConfig,
                names: list[str]) -> int:
    """``stmae-eval --workers N | --ray ...``: segment the sequences as a corpus (resumable),
    then score the finished ones. Returns the exit status (1 if any sequence failed)."""
    from .jobs import davis_jobs
    from .scoring import score_sequences

    _check(args)
    if args.max_frames is not None and args.max_frames < 3:
        raise InputError(f"--max-frames must be at least 3 (first and last frames are not scored), got {args.max_frames}")
    out = Path(args.out)
    roots = {"--dataset": args.dataset, **_model_inputs(args)}
    _check_out(args, roots)
    jobs = davis_jobs(args.dataset, args.resolution, names)
    summary = _run(args, jobs, _setup(args, make_spec(), config, out), roots)
    finished = [n for n in names if n not in summary.failed]
    if finished:
        result = score_sequences(args.dataset, args.resolution, finished, out)
        result.write_csv(out / "results.csv")
        for seq in result.sequences:
            print(f"{seq.name:<24} J {seq.J:.4f}  F {seq.F:.4f}  J&F {seq.JF:.4f}  ({seq.frames} frames)")
        print(f"per-sequence results: {out / 'results.csv'}")
        print(result.summary_line())
    _print_summary(summary, args)
    return 0 if summary.ok else 1
