"""`stmae-demo`: the whole toolkit in one command (see demo.pipeline)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import DEFAULT_SEED

DEFAULT_OUT = "runs/stmae-demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stmae-demo",
        description="Trained small STMAE -> ONNX export (cached) -> ONNX Runtime -> masks, overlay, "
                    "contact sheet and report, on a synthetic clip or your video.",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}, under runs/, which git ignores)")
    p.add_argument("--checkpoint", help="checkpoint (default: the trained small model in weights/)")
    p.add_argument("--input", help="a video file or a folder of frames (default: a synthetic clip)")
    p.add_argument("--mask", help="the first frame's mask (with --input)")
    p.add_argument("--gt", metavar="DIR",
                   help="with --input: your video's annotations, one PNG label map per frame named like the frames "
                   "(DAVIS layout: Annotations/<resolution>/<sequence>); the report then gives J&F. A folder that "
                   "lacks any frame's annotation is refused")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="export precision (onnxruntime)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=32, help="synthetic clip length (default 32: 1.3 s at 24 fps)")
    p.add_argument("--size", type=int, default=None,
                   help="shorter side processed, and of the synthetic clip (default: the checkpoint's processing size, "
                   "240 for the shipped model; else 480)")
    p.add_argument("--objects", type=int, default=2, help="objects in the synthetic clip (default 2)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"synthetic clip seed (default {DEFAULT_SEED}: a typical clip, J&F near the median of seeds 0-9)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.cpus import passive_openmp_waits

    passive_openmp_waits()  # before torch loads: idle threads sleep instead of spinning on shared cores
    import torch

    from runtime.progress import progress_bar

    from runtime.errors import BackendUnavailable, InputError
    from runtime.export_manifest import ExportManifestError
    from stmae import CheckpointError

    from export.exporter import ExportError
    from .pipeline import DemoConfig, run_demo, summary_lines

    try:
        if args.device == "cpu":
            torch.set_flush_denormal(True)
        config = DemoConfig(
            out_dir=Path(args.out), checkpoint=Path(args.checkpoint) if args.checkpoint else None,
            input=Path(args.input) if args.input else None, mask=Path(args.mask) if args.mask else None,
            gt=Path(args.gt) if args.gt else None,
            frames=args.frames, size=args.size, objects=args.objects, seed=args.seed,
            backend=args.backend, precision=args.precision, device=args.device,
        )
        bars: list = []

        def progress(done: int, total: int) -> None:
            if not bars:
                bars.append(progress_bar(total=total, unit="frame", desc="segment"))
            bars[0].update(done - bars[0].n)

        try:
            report = run_demo(config, log=lambda m: print(m, file=sys.stderr, flush=True), progress=progress)
        finally:
            for bar in bars:
                bar.close()
    except (ValueError, FileNotFoundError, InputError, BackendUnavailable, ExportManifestError, CheckpointError, ExportError) as exc:
        print(f"stmae-demo: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    files = report["files"]
    print(f"masks:         {files['masks']}/")
    print(f"overlay video: {files['overlay']}")
    print(f"contact sheet: {files['contact_sheet']}")
    print(f"report:        {files['report_md']}  {files['report_json']}")
    for line in summary_lines(report):
        print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
