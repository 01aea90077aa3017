"""Live options of ``stmae-segment`` (``--camera``, ``--realtime``, ``--duration`` ...) and
the command body; :mod:`runtime.cli` parses and calls."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ..config import SessionConfig
from ..errors import InputError
from .source import is_live_input


def add_live_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("live sources (--input URL or /dev/videoN, or --camera N)")
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
    line; writes OUT/live_stats.json with --out. Ctrl-C ends it with exit status 0."""
    from ..corpus.records import write_json
    from ..io.mask_io import read_mask
    from stmae.outputs import real_path, recorded_files, write_record

    from ..segment_video import TOOL, check_output_folder, labels_present
    from .realtime import segment_live as run
    from .source import open_live

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
    mask, palette = read_mask(args.mask)
    if not labels_present(mask):
        raise InputError(f"the mask {args.mask} has no object (every pixel is 0)")
    if args.overlay and Path(args.overlay).suffix.lower() not in (".mp4", ".m4v", ".mov", ".avi", ".mkv"):
        raise InputError(f"overlay {args.overlay}: use a .mp4, .avi, .mkv, .mov or .m4v file")
    if args.overlay and not Path(args.overlay).resolve().parent.is_dir():
        raise InputError(f"overlay {args.overlay}: folder {Path(args.overlay).parent} does not exist")
    if args.overlay and Path(args.overlay).exists() and not args.overwrite:
        raise InputError(f"overlay {args.overlay} already exists; pass --overwrite to replace it")
    if args.overlay and Path(args.overlay).exists() and str(real_path(args.overlay)) not in (
        recorded_files(args.out, TOOL) if args.out else set()
    ):
        raise InputError(
            f"--overwrite replaces only an overlay that {TOOL} recorded in its --out folder, and {args.overlay} "
            f"is not recorded there; it was left untouched: choose another --overlay"
        )
    if args.out:
        check_output_folder(args.out, args.overwrite)
        write_record(args.out, TOOL, files=[args.overlay] if args.overlay else [], input=str(args.input or args.camera))
    backend = make_backend()
    source = open_live(args.input, args.camera, args.stream_timeout)
    print(f"segmenting {source.url} ({'real-time: frames dropped when behind' if args.realtime else 'every frame'}); "
          f"Ctrl-C to stop", flush=True)
    summary = run(source, backend, mask, config=config, palette=palette, out_dir=args.out, overlay=args.overlay,
                  realtime=args.realtime, max_frames=args.max_frames, duration=args.duration)
    if args.out:
        write_json(Path(args.out) / "live_stats.json", summary.as_dict())
    print(summary.line(), flush=True)
    return 0
