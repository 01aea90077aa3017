"""Command lines: ``stmae-segment`` and ``stmae-eval`` (argparse only; the work is done
by :mod:`runtime.segment_video` and :mod:`runtime.evaluation`).

Bad input ends with one ``<prog>: error: <message>`` on stderr and exit status 2, never a
traceback (set STMAE_DEBUG=1 to see one for unexpected errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from stmae.checkpoint import CheckpointError

from .backends.factory import BACKENDS, create_backend
from .corpus.cli import add_corpus_options, eval_corpus, segment_corpus, wants_corpus
from .live.cli import add_live_options, segment_live, wants_live
from .config import (
    DEFAULT_MAX_MEMORY_FRAMES,
    DEFAULT_MEM_EVERY,
    DEFAULT_SIZE,
    DEFAULT_TOP_K,
    SessionConfig,
)
from .errors import BackendUnavailable, InputError


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="STMAE checkpoint (published or toolkit format); needed by --backend torch")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="inference backend (default: torch)")
    parser.add_argument("--export-dir", help="stmae-export folder (manifest.json + ONNX/engines) for onnxruntime/tensorrt")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="torch backend: convolution precision (fp16/bf16 on CUDA only; default fp32)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"resize frames so the shorter side is SIZE (-1: as they are; default {DEFAULT_SIZE})")
    parser.add_argument("--mem-every", type=int, default=DEFAULT_MEM_EVERY,
                        help=f"write a frame to memory every N frames (default {DEFAULT_MEM_EVERY})")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                        help=f"memory positions read per query position (default {DEFAULT_TOP_K})")
    parser.add_argument("--max-memory-frames", type=int, default=DEFAULT_MAX_MEMORY_FRAMES,
                        help=f"working memory window in frames, besides annotated frames (default {DEFAULT_MAX_MEMORY_FRAMES})")
    parser.add_argument("--overwrite", action="store_true", help="replace masks already in the output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _session_config(args: argparse.Namespace) -> SessionConfig:
    try:
        return SessionConfig(
            mem_every=args.mem_every, top_k=args.top_k, max_memory_frames=args.max_memory_frames, size=args.size
        )
    except ValueError as exc:
        raise InputError(str(exc).replace("mem_every", "--mem-every").replace("top_k", "--top-k")
                         .replace("max_memory_frames", "--max-memory-frames").replace("size", "--size", 1)) from None


def _backend(args: argparse.Namespace):
    import torch

    device = args.device or _default_device()
    if device == "cpu":
        # Random or poorly scaled weights can produce denormal floats, which make CPU
        # convolutions many times slower; flushing them changes results by < 1e-38.
        torch.set_flush_denormal(True)
    if args.backend == "torch" and not args.checkpoint:
        raise InputError("--checkpoint is required with --backend torch")
    if args.backend != "torch" and not args.export_dir:
        raise InputError(f"--export-dir is required with --backend {args.backend} (make one with stmae-export)")
    return create_backend(
        args.backend,
        checkpoint=args.checkpoint,
        export_dir=args.export_dir,
        device=device,
        precision=args.precision,
    )


def _backend_spec(args: argparse.Namespace):
    """What worker processes / Ray actors need to build the backend themselves."""
    from .corpus.worker import BackendSpec

    if args.backend == "torch" and not args.checkpoint:
        raise InputError("--checkpoint is required with --backend torch")
    if args.backend != "torch" and not args.export_dir:
        raise InputError(f"--export-dir is required with --backend {args.backend} (make one with stmae-export)")
    return BackendSpec(args.backend, args.checkpoint, args.export_dir, args.device or _default_device(), args.precision)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that report bad input or an unusable backend (exit status 2)."""
    from stmae.outputs import OutputError

    errors: list[type[BaseException]] = [InputError, BackendUnavailable, CheckpointError, OutputError]
    try:
        from .export_manifest import ExportManifestError
    except ImportError:  # pragma: no cover - the export helper module is optional here
        pass
    else:
        errors.append(ExportManifestError)
    return tuple(errors)


def _run(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body; turn errors into one line on stderr and an exit status (the
    body's own status, if it returns one)."""
    try:
        status = body()
    except _user_errors() as exc:
        text = " ".join(line.strip() for line in str(exc).strip().splitlines())  # one line, always
        print(f"{prog}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unexpected: still one line unless debugging
        if os.environ.get("STMAE_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{prog}: error: {type(exc).__name__}: {first} (set STMAE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return int(status or 0)


def _progress(total: int | None, unit: str, quiet: bool, desc: str | None = None):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=quiet, desc=desc, dynamic_ncols=True, file=sys.stderr)


def segment_main(argv: Sequence[str] | None = None) -> int:
    """``stmae-segment``: segment a video from its first mask into palette PNGs."""
    parser = argparse.ArgumentParser(
        prog="stmae-segment",
        description="Segment the objects of a video from their masks in the first frame (or in --masks-dir). "
        "Writes one palette PNG per frame, named after the frame.",
    )
    parser.add_argument("--input", help="folder of frames (jpg/png, sorted by name), a video file, or a live "
                        "source: rtsp://, rtmp://, http(s)://, udp:// URL or /dev/videoN")
    parser.add_argument("--mask", help="label-map PNG of the first frame (0 = background, 1..255 = objects)")
    parser.add_argument("--masks-dir", help="folder of masks named after frames (00000.png ... for a video); "
                        "a later mask introduces objects not seen before")
    parser.add_argument("--out", help="output folder for the masks (a live source may write only --overlay)")
    parser.add_argument("--overlay", help="also write an overlay video (e.g. result.mp4)")
    _add_runtime_options(parser)
    add_corpus_options(parser)
    add_live_options(parser)
    args = parser.parse_args(argv)

    def body() -> int | None:
        if wants_corpus(args):
            if not args.out:
                raise InputError("--out is required: the folder that gets one subfolder of masks per video")
            return segment_corpus(args, _backend_spec(args), _session_config(args))
        if wants_live(args):
            return segment_live(args, lambda: _backend(args), _session_config(args))
        if not args.input or not args.out:
            raise InputError("give --input (frames folder, video file, stream URL or camera) and --out, "
                             "or --videos DIR and --out for many videos")
        if args.realtime or args.duration is not None:
            raise InputError("--realtime and --duration are for live sources (a stream URL, /dev/videoN or --camera N)")
        if args.max_frames is not None and args.max_frames < 1:
            raise InputError(f"--max-frames must be at least 1, got {args.max_frames}")
        from .corpus.worker import first_frames
        from .frames import open_frames
        from .segment_video import check_output_folder, check_targets, load_annotations, segment_video

        config = _session_config(args)
        frames = first_frames(open_frames(args.input), args.max_frames)
        annotations = load_annotations(frames, args.mask, args.masks_dir)
        check_targets(args.input, args.out, args.overlay, args.overwrite, args.mask, args.masks_dir)
        backend = _backend(args)  # a bad checkpoint or export is refused before --out is created
        check_output_folder(args.out, args.overwrite)  # created and proven writable before the network runs
        with _progress(len(frames), "frame", args.quiet) as bar:
            summary = segment_video(
                backend, args.input, args.out, config=config, overwrite=args.overwrite,
                overlay=args.overlay, on_frame=lambda _: bar.update(1),
                frames=frames, annotations=annotations,
            )
        print(summary.line())
        if summary.warning():
            print(f"stmae-segment: warning: {summary.warning()}", file=sys.stderr)
            return 1
        return 0

    return _run("stmae-segment", body)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``stmae-eval``: segment and score DAVIS sequences (J, F, J&F)."""
    parser = argparse.ArgumentParser(
        prog="stmae-eval",
        description="Evaluate on a DAVIS-layout dataset: predictions under OUT/<seq>/, per-sequence "
        "OUT/results.csv, last line 'J&F ... J ... F ...' (DAVIS protocol, first and last frames excluded).",
    )
    parser.add_argument("--dataset", required=True, help="DAVIS root (JPEGImages/, Annotations/, ImageSets/)")
    parser.add_argument("--split", help="split name: ImageSets/<year>/<split>.txt (e.g. val)")
    parser.add_argument("--sequences", help="comma-separated sequence names (instead of --split)")
    parser.add_argument("--year", help="ImageSets year folder (default: the one that has the split)")
    parser.add_argument("--resolution", default="480p", help="resolution folder (default 480p)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-frames", type=int, help="only the first N frames of each sequence (quick checks)")
    parser.add_argument("--streams", type=int, default=1,
                        help="sequences segmented together by the batched engine (default 1; same masks as one at a time)")
    _add_runtime_options(parser)
    add_corpus_options(parser, videos=False)
    args = parser.parse_args(argv)

    def body() -> int | None:
        from .evaluation import RESULTS_CSV, check_eval_output, evaluate_sequences, read_split
        from .frames import FrameFolder

        config = _session_config(args)
        root = Path(args.dataset)
        if not root.is_dir():
            raise InputError(f"--dataset {root} does not exist")
        if args.streams < 1:
            raise InputError(f"--streams must be at least 1, got {args.streams}")
        if bool(args.split) == bool(args.sequences):
            raise InputError("give exactly one of --split NAME or --sequences a,b,c")
        names = read_split(root, args.split, args.year) if args.split else [
            s.strip() for s in args.sequences.split(",") if s.strip()
        ]
        if wants_corpus(args):
            return eval_corpus(args, _backend_spec(args), config, names)
        out = Path(args.out)
        results_csv = out / RESULTS_CSV
        total = 0
        for name in names:
            folder = root / "JPEGImages" / args.resolution / name
            if not folder.is_dir():
                raise InputError(f"sequence {name!r}: {folder} does not exist (is --resolution right?)")
            n = len(FrameFolder(folder))
            total += min(n, args.max_frames) if args.max_frames else n
        backend = _backend(args)
        check_eval_output(out, root, names, args.overwrite)  # before the network runs
        with _progress(total, "frame", args.quiet) as bar:
            result = evaluate_sequences(
                backend, root, names, args.resolution, out, config,
                overwrite=args.overwrite, max_frames=args.max_frames, streams=args.streams,
                on_frame=lambda seq, i: (bar.set_description(seq, refresh=False), bar.update(1)),
            )
        result.write_csv(results_csv)
        for seq in result.sequences:
            print(f"{seq.name:<24} J {seq.J:.4f}  F {seq.F:.4f}  J&F {seq.JF:.4f}  ({seq.frames} frames)")
        print(f"per-sequence results: {results_csv}")
        print(result.summary_line())

    return _run("stmae-eval", body)
