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

# Only light imports here: ``--help`` must not import torch or ONNX Runtime (the heavy
# modules are imported inside the command bodies).
from .corpus.cli import add_corpus_options, eval_corpus, segment_corpus, wants_corpus
from .live.cli import add_live_options, segment_live, wants_live
from .config import (
    DEFAULT_MAX_MEMORY_FRAMES,
    DEFAULT_MEM_EVERY,
    DEFAULT_TOP_K,
    SessionConfig,
)
from .cpus import passive_openmp_waits
from .errors import BackendUnavailable, InputError
from .mem_interval import parse_mem_every, resolve_mem_every
from .sizing import AUTO, ResolvedSize, parse_size, resolve_size

# runtime.backends.factory.BACKENDS (that module imports torch), and 'auto' (runtime.fast_path).
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
BACKEND_ENV = "STMAE_BACKEND"  # the default of --backend, e.g. STMAE_BACKEND=torch


def _default_backend() -> str:
    value = os.environ.get(BACKEND_ENV, "auto").strip() or "auto"
    return value if value in BACKENDS else "auto"  # a bad value is refused in _require_model


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    _add_output_options(parser)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model, backend, device, size and memory schedule options (every tool that runs
    the network, ``stmae-serve`` too)."""
    parser.add_argument("--checkpoint", help="STMAE checkpoint (published or toolkit format)")
    parser.add_argument("--backend", choices=BACKENDS, default=_default_backend(),
                        help="inference backend (default auto, or $STMAE_BACKEND: on a CPU, ONNX Runtime on an fp32 "
                        "export of --checkpoint made once and cached; on CUDA, torch; with --export-dir, onnxruntime)")
    parser.add_argument("--export-dir", help="stmae-export folder (manifest.json + ONNX/engines) for onnxruntime/tensorrt")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="torch backend: convolution precision (fp16/bf16 on CUDA only; default fp32)")
    parser.add_argument("--allow-tf32", action="store_true",
                        help="CUDA: let float32 products and convolutions use TF32 (faster, ~1e-3 relative "
                        "error); default off: fp32 means IEEE float32")
    parser.add_argument("--size", type=parse_size, default=AUTO,
                        help="resize frames so the shorter side is SIZE pixels (-1: as they are; default auto: "
                        "the resolution the checkpoint or export records, else 480 for published checkpoints)")
    parser.add_argument("--mem-every", type=parse_mem_every, default=AUTO,
                        help="write a frame to memory every N frames (default auto: the interval the checkpoint "
                        f"or export records, else the published {DEFAULT_MEM_EVERY})")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                        help=f"memory positions read per query position (default {DEFAULT_TOP_K})")
    parser.add_argument("--max-memory-frames", type=int, default=DEFAULT_MAX_MEMORY_FRAMES,
                        help=f"working memory window in frames, besides annotated frames (default {DEFAULT_MAX_MEMORY_FRAMES})")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace masks already in the output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--png-level", type=int, default=None, metavar="0-9",
                        help="zlib compression of the mask PNGs, 0 (none) to 9 (smallest files); every level "
                        "gives the same labels (default 1: fast)")


def _require_model(args: argparse.Namespace) -> None:
    """The model file the chosen backend needs: --checkpoint (torch), --export-dir
    (onnxruntime, tensorrt), either (auto)."""
    env = os.environ.get(BACKEND_ENV, "").strip()
    if env and env not in BACKENDS:
        raise InputError(f"{BACKEND_ENV}={env!r} is not a backend; use one of {', '.join(BACKENDS)} or unset it")
    if args.backend == "auto":
        if not args.checkpoint and not args.export_dir:
            raise InputError("give --checkpoint (a trained STMAE checkpoint) or --export-dir (made by stmae-export)")
        return
    if args.backend == "torch" and not args.checkpoint:
        raise InputError("--checkpoint is required with --backend torch")
    if args.backend != "torch" and not args.export_dir:
        raise InputError(f"--export-dir is required with --backend {args.backend} (make one with stmae-export)")


def _resolved_size(args: argparse.Namespace) -> ResolvedSize:
    """--size, or for 'auto' what the export folder or checkpoint records (else 480)."""
    if args.size == AUTO:
        _require_model(args)
    return resolve_size(args.size, checkpoint=args.checkpoint if args.backend in ("torch", "auto") else None,
                        export_dir=args.export_dir if args.backend != "torch" else None)


def _session_config(args: argparse.Namespace, size: int) -> SessionConfig:
    """The session's schedule and size; ``--mem-every auto`` resolved like ``--size auto``
    (its text, for the summary line, in ``args.mem_every_text``)."""
    if args.mem_every == AUTO:
        _require_model(args)
    every = resolve_mem_every(args.mem_every, checkpoint=args.checkpoint if args.backend in ("torch", "auto") else None,
                              export_dir=args.export_dir if args.backend != "torch" else None)
    args.mem_every_text = every.text()
    try:
        return SessionConfig(
            mem_every=every.every, top_k=args.top_k, max_memory_frames=args.max_memory_frames, size=size
        )
    except ValueError as exc:
        raise InputError(str(exc).replace("mem_every", "--mem-every").replace("top_k", "--top-k")
                         .replace("max_memory_frames", "--max-memory-frames").replace("size", "--size", 1)) from None


def _png_level(args: argparse.Namespace) -> int:
    """--png-level, checked (default: runtime.io.mask_io.DEFAULT_PNG_LEVEL)."""
    from .io.mask_io import DEFAULT_PNG_LEVEL, check_png_level

    try:
        return check_png_level(DEFAULT_PNG_LEVEL if args.png_level is None else args.png_level)
    except ValueError as exc:
        raise InputError(str(exc).replace("png_level", "--png-level")) from None


def _pipeline(args: argparse.Namespace):
    """The pipelined frame loop's options (runtime.io.pipeline) from the command line."""
    from .io.pipeline import PipelineOptions

    return PipelineOptions(png_level=args.png_level)


def _choose_backend(args: argparse.Namespace) -> str:
    """Resolve ``--backend auto`` once (runtime.fast_path: on a CPU this may export the
    checkpoint, so it runs after every input and output check); sets args.backend and
    args.export_dir, and returns the words for the summary line ('backend onnxruntime
    (cached fp32 export, reused)')."""
    from .fast_path import choose_backend

    _require_model(args)
    if getattr(args, "backend_text", None) is None:
        device = args.device or _default_device()
        by = "$" + BACKEND_ENV if os.environ.get(BACKEND_ENV, "").strip() == args.backend else "--backend"
        choice = choose_backend(args.backend, device, args.checkpoint, args.export_dir,
                                lambda message: print(f"{args.prog}: {message}", file=sys.stderr, flush=True), by)
        args.backend = choice.name
        args.export_dir = str(choice.export_dir) if choice.export_dir else args.export_dir
        args.backend_text = choice.text()
    return args.backend_text


def _backend(args: argparse.Namespace):
    import torch

    from .backends.factory import create_backend

    _choose_backend(args)
    device = args.device or _default_device()
    if device == "cpu":
        # Random or poorly scaled weights can produce denormal floats, which make CPU
        # convolutions many times slower; flushing them changes results by < 1e-38.
        torch.set_flush_denormal(True)
    return create_backend(
        args.backend,
        checkpoint=args.checkpoint,
        export_dir=args.export_dir,
        device=device,
        precision=args.precision,
        options={"tf32": args.allow_tf32},
    )


def _backend_spec(args: argparse.Namespace):
    """What worker processes / Ray actors need to build the backend themselves."""
    from .corpus.worker_setup import BackendSpec

    _choose_backend(args)
    return BackendSpec(args.backend, args.checkpoint, args.export_dir, args.device or _default_device(), args.precision,
                       args.allow_tf32)


def _model_inputs(args: argparse.Namespace) -> dict[str, str | None]:
    """The model files an output must not alias: --checkpoint and --export-dir."""
    return {"--checkpoint": args.checkpoint, "--export-dir": args.export_dir}


# Errors that report bad input or an unusable backend (exit status 2), by module: only the
# classes of modules already imported can have been raised, so a refusal never waits for
# torch (stmae.checkpoint imports it) just to be recognised.
_USER_ERRORS = (("stmae.outputs", "OutputError"), ("stmae.checkpoint", "CheckpointError"),
                ("runtime.export_manifest", "ExportManifestError"))


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that report bad input or an unusable backend (exit status 2)."""
    errors: list[type[BaseException]] = [InputError, BackendUnavailable]
    for module, name in _USER_ERRORS:
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _run(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body; turn errors into one line on stderr and an exit status (the
    body's own status, if it returns one)."""
    from .interrupt import deferred_sigint

    try:
        with deferred_sigint():  # Ctrl-C is taken between frames (runtime.interrupt)
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
    from .progress import progress_bar

    return progress_bar(total=total, unit=unit, disable=quiet, desc=desc)


def segment_main(argv: Sequence[str] | None = None) -> int:
    """``stmae-segment``: segment a video from its first mask into palette PNGs."""
    parser = argparse.ArgumentParser(
        prog="stmae-segment",
        description="Segment the objects of a video from their masks in the first frame (or in --masks-dir). "
        "Writes one palette PNG per frame, named after the frame.",
    )
    parser.add_argument("--input", help="folder of frames (jpg/png, sorted by name), a video file, or a live "
                        "source: rtsp://, rtmp://, http(s)://, udp:// URL or /dev/videoN")
    parser.add_argument("--mask", help="label-map PNG of the first frame: 0 = background, 1..254 = objects, "
                        "255 = void (never an object); a greyscale 0/255 mask is one object (see docs/segment.md#masks)")
    parser.add_argument("--masks-dir", help="folder of masks named after frames (00000.png ... for a video); "
                        "a later mask introduces objects not seen before")
    parser.add_argument("--out", help="output folder for the masks (a live source may write only --overlay)")
    parser.add_argument("--overlay", help="also write an overlay video (e.g. result.mp4)")
    _add_runtime_options(parser)
    add_corpus_options(parser)
    add_live_options(parser)
    args = parser.parse_args(argv)
    args.prog, args.backend_text = parser.prog, None
    passive_openmp_waits()  # before torch loads (runtime.cpus)

    def body() -> int | None:
        args.png_level = _png_level(args)
        if wants_corpus(args):
            if not args.out:
                raise InputError("--out is required: the folder that gets one subfolder of masks per video")
            return segment_corpus(args, lambda: _backend_spec(args), _session_config(args, _resolved_size(args).size))
        if args.streams != 1:
            raise InputError("--streams steps several videos together: give them with --videos DIR")
        if wants_live(args):
            return segment_live(args, lambda: _backend(args), _session_config(args, _resolved_size(args).size))
        if not args.input or not args.out:
            raise InputError("give --input (frames folder, video file, stream URL or camera) and --out, "
                             "or --videos DIR and --out for many videos")
        if args.realtime or args.duration is not None:
            raise InputError("--realtime and --duration are for live sources (a stream URL, /dev/videoN or --camera N)")
        if args.max_frames is not None and args.max_frames < 1:
            raise InputError(f"--max-frames must be at least 1, got {args.max_frames}")
        from .corpus.worker_setup import first_frames
        from .io.frames import open_frames
        from .segment_video import check_output_folder, check_targets, load_annotations, segment_video

        # the path, mask and output checks first: they answer before torch loads
        frames = first_frames(open_frames(args.input), args.max_frames)
        annotations = load_annotations(frames, args.mask, args.masks_dir)
        check_targets(args.input, args.out, args.overlay, args.overwrite, args.mask, args.masks_dir,
                      _model_inputs(args))
        check_output_folder(args.out, args.overwrite, create=False)  # the gate, creating nothing yet
        size = _resolved_size(args)
        config = _session_config(args, size.size)
        backend = _backend(args)  # a bad checkpoint or export is refused before --out is created
        check_output_folder(args.out, args.overwrite)  # created and proven writable before the network runs
        with _progress(len(frames), "frame", args.quiet) as bar:
            summary = segment_video(
                backend, args.input, args.out, config=config, overwrite=args.overwrite,
                overlay=args.overlay, on_frame=lambda _: bar.update(1),
                frames=frames, annotations=annotations, pipeline=_pipeline(args),
            )
        print(summary.line(f"{args.backend_text}, {size.text()}, {args.mem_every_text}"))
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
    parser.add_argument("--resolution", default=AUTO,
                        help="resolution folder under JPEGImages/ (default auto: '<size>p' for the size the "
                        "checkpoint or export records, e.g. 240p, when the dataset has it, else 480p)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-frames", type=int, help="only the first N frames of each sequence (quick checks)")
    parser.add_argument("--streams", type=int, default=1,
                        help="sequences segmented together by the batched engine (default 1; same masks as one at a time)")
    _add_runtime_options(parser)
    add_corpus_options(parser, videos=False)
    args = parser.parse_args(argv)
    args.prog, args.backend_text = parser.prog, None
    passive_openmp_waits()  # before torch loads (runtime.cpus)

    def body() -> int | None:
        from .evaluation import RESULTS_CSV, TOOL, check_eval_output, evaluate_sequences, read_split, written_outputs
        from .io.gate import finish_run
        from .io.frames import FrameFolder

        args.png_level = _png_level(args)
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
        size = _resolved_size(args)
        config = _session_config(args, size.size)
        resolution = _resolution(root, args.resolution, size)
        if wants_corpus(args):
            args.resolution = resolution  # the corpus reads JPEGImages/<resolution>, never 'auto'
            return eval_corpus(args, lambda: _backend_spec(args), config, names)
        out = Path(args.out)
        results_csv = out / RESULTS_CSV
        total = 0
        for name in names:
            folder = root / "JPEGImages" / resolution / name
            if not folder.is_dir():
                raise InputError(f"sequence {name!r}: {folder} does not exist (is --resolution right?)")
            n = len(FrameFolder(folder))
            total += min(n, args.max_frames) if args.max_frames else n
        check_eval_output(out, root, names, args.overwrite, _model_inputs(args), create=False)  # nothing made yet
        backend = _backend(args)  # a bad checkpoint or export is refused before --out is created
        check_eval_output(out, root, names, args.overwrite, _model_inputs(args))  # before the network runs
        with _progress(total, "frame", args.quiet) as bar:
            result = evaluate_sequences(
                backend, root, names, resolution, out, config,
                overwrite=args.overwrite, max_frames=args.max_frames, streams=args.streams,
                on_frame=lambda seq, i: (bar.set_description(seq, refresh=False), bar.update(1)),
                pipeline=_pipeline(args),
            )
        result.write_csv(results_csv)
        finish_run(out, TOOL, written_outputs(out, names))  # what a later --overwrite removes
        for seq in result.sequences:
            print(f"{seq.name:<24} J {seq.J:.4f}  F {seq.F:.4f}  J&F {seq.JF:.4f}  ({seq.frames} frames)")
        print(f"per-sequence results: {results_csv}")
        print(f"resolution {resolution}, {size.text()}, {args.mem_every_text}, {args.backend_text}")
        print(result.summary_line())

    return _run("stmae-eval", body)


def _resolution(root: Path, requested: str, size: ResolvedSize) -> str:
    """The JPEGImages/<res> folder to read: as asked, or for 'auto' '<size>p' when the
    dataset has it (frames already at the network's size), else 480p."""
    available = sorted(p.name for p in (root / "JPEGImages").iterdir() if p.is_dir()) if (root / "JPEGImages").is_dir() else []
    if requested != AUTO:
        if requested not in available:
            raise InputError(f"--resolution {requested}: {root / 'JPEGImages' / requested} does not exist "
                             f"(this dataset has: {', '.join(available) or 'no JPEGImages/<res> folder'})")
        return requested
    if not available:
        raise InputError(f"{root} has no JPEGImages/<res> folder; is --dataset a DAVIS-layout root?")
    for candidate in (f"{size.size}p", "480p"):
        if candidate in available:
            return candidate
    if len(available) == 1:
        return available[0]
    raise InputError(f"--resolution auto: {root / 'JPEGImages'} has neither {size.size}p nor 480p; "
                     f"choose one of {', '.join(available)} with --resolution")
