"""Live options of ``stmae-segment`` (``--camera``, ``--realtime``, ``--duration`` ...) and
the command body; :mod:`runtime.cli` parses and calls."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from ..config import SessionConfig
from ..errors import InputError
from .source import is_live_input


def add_live_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("live sources (--input URL or /dev/videoN, or --camera N; see docs/live.md)")
    group.add_argument("--camera", type=int, help="segment camera N (V4L2; same as --input /dev/videoN)")
    group.add_argument("--realtime", action="store_true",
                       help="keep up with the source: segment the newest frame, drop (and count) the ones "
                       "there was no time for; without it every frame is segmented and the source waits")
    group.add_argument("--duration", type=float, help="stop after this many seconds (default: end of stream or Ctrl-C)")
    group.add_argument("--stream-timeout", type=float, default=10.0,
                       help="seconds to wait for a stream to open or send data (default 10)")


def wants_live(args: argparse.Namespace) -> bool:
    return args.camera is not None or is_live_input(args.input)


def segment_live(args: argparse.Namespace, make_backend: Callable[[], object], config: SessionConfig) -> int:
    """``stmae-segment --input URL|/dev/videoN`` or ``--camera N``: prints the statistics
    line (with why the run ended); writes OUT/live_stats.json with --out. Returns 0 when
    the source ended, or on --duration, --max-frames or Ctrl-C; 1 (with a one-line warning)
    when the source stalled, broke mid-frame or changed frame size (what was segmented
    before is kept). Every refusal comes before anything is written: the options, the
    outputs, then the source is opened and its first frame read (within --stream-timeout)
    and checked against the mask, then the backend is built."""
    _check_options(args)
    from ..corpus.records import write_json
    from ..io.mask_io import read_mask
    from ..io.overlay import check_overlay_path
    from stmae.outputs import real_path, recorded_files

    from ..errors import output_refusals_as_input_errors
    from ..io.gate import begin_run, check_aliases, finish_run
    from ..io.mask_io import existing_masks

    from ..segment_video import TOOL, check_output_folder, labels_present
    from .realtime import mask_for_frame
    from .realtime import segment_live as run
    from .source import open_live

    mask, palette = read_mask(args.mask)
    if not labels_present(mask):
        raise InputError(f"the mask {args.mask} has no object (every pixel is 0)")
    inputs = {"--mask": args.mask, "--checkpoint": args.checkpoint, "--export-dir": args.export_dir}
    if args.overlay:
        check_overlay_path(args.overlay)
        with output_refusals_as_input_errors():
            check_aliases(args.overlay, "--overlay", inputs, folder_output=False)
    if args.overlay and Path(args.overlay).exists() and not args.overwrite:
        raise InputError(f"overlay {args.overlay} already exists; pass --overwrite to replace it")
    if args.overlay and Path(args.overlay).exists() and str(real_path(args.overlay)) not in (
        recorded_files(args.out, TOOL) if args.out else set()
    ):
        raise InputError(
            f"--overwrite replaces only an overlay that {TOOL} recorded in its --out folder, and {args.overlay} "
            f"is not recorded there; it was left untouched: choose another --overlay"
        )
    if args.out:  # the output gate, creating nothing: a refusal (here or of the source) writes nothing
        check_output_folder(args.out, args.overwrite, inputs=inputs, create=False)
    source = open_live(args.input, args.camera, args.stream_timeout)  # waits --stream-timeout at most
    try:
        mask_for_frame(mask, source.first_frame())  # a source that sends nothing, or frames of another size
        backend = make_backend()
    except BaseException:
        source.close()
        raise
    if args.out:
        check_output_folder(args.out, args.overwrite, inputs=inputs)
        begin_run(args.out, TOOL, outputs=None, candidates=existing_masks(args.out), files=[args.overlay],
                  input=str(args.input or args.camera))
    print(f"segmenting {source.url} ({'real-time: frames dropped when behind' if args.realtime else 'every frame'}); "
          f"Ctrl-C to stop", flush=True)
    summary = run(source, backend, mask, config=config, palette=palette, out_dir=args.out, overlay=args.overlay,
                  realtime=args.realtime, max_frames=args.max_frames, duration=args.duration)
    if args.out:
        write_json(Path(args.out) / "live_stats.json", summary.as_dict())
        finish_run(args.out, TOOL, [m.name for m in existing_masks(args.out)] + ["live_stats.json"])
    backend = getattr(args, "backend_text", None)
    print(f"{summary.line()}{f', {backend}' if backend else ''}", flush=True)
    if summary.warning():
        print(f"stmae-segment: warning: {summary.warning()}", file=sys.stderr, flush=True)
        return 1
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """The live options alone (before anything is read, opened or imported)."""
    if args.camera is not None and args.input:
        raise InputError("give --input URL or --camera N, not both")
    if not args.mask:
        raise InputError("a live source needs --mask FIRST.png: the objects in the first frame, at the stream's size")
    if args.masks_dir:
        raise InputError("--masks-dir is for videos on disk; a live source takes --mask")
    if not args.out and not args.overlay:
        raise InputError("give --out DIR (masks) and/or --overlay FILE (overlay video)")
    for flag, value in (("--max-frames", args.max_frames), ("--duration", args.duration),
                        ("--stream-timeout", args.stream_timeout)):
        if value is not None and value <= 0:
            raise InputError(f"{flag} must be positive, got {value}")
