"""``stmae-export CHECKPOINT --out DIR [--precision fp32|fp16|int8] [--opset N]
[--calibration FRAMES_DIR] [--overwrite] [--no-verify]``.

Exit status: 0 on success; 1 when the parity gate fails (nothing is written); 2 for bad
input (missing checkpoint, existing --out without --overwrite, bad opset, empty
calibration folder, ...). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.errors import InputError
from stmae.checkpoint import CheckpointError

from .config import DEFAULT_KEY_FP32, ExportConfig, GateThresholds
from .exporter import ExportError, ExportGateError, run_export
from .fp32_islands import KEY_FP32_POLICIES
from .graphs import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, TraceShape
from .precision import INT8_QUANTIZERS, PrecisionToolMissing

EXIT_GATE = 1
EXIT_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stmae-export",
        description="Export an STMAE checkpoint to ONNX (key encoder + mask autoencoder) at the "
        "chosen precision, checked against PyTorch by a parity gate.",
    )
    p.add_argument("checkpoint", type=Path, help="STMAE checkpoint (published or toolkit format)")
    p.add_argument("--out", type=Path, required=True, help="export folder to create")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("--calibration", type=Path, help="folder of frames for int8 calibration (default: a synthetic clip)")
    p.add_argument("--calibration-frames", type=int, default=6, help="frames used for calibration (default 6)")
    p.add_argument("--verify-frames", type=Path, help="folder of frames the pipelines are compared on (default: a synthetic clip)")
    p.add_argument("--verify-masks", type=Path, help="ground-truth masks of --verify-frames (<frame name>.png) for J&F")
    p.add_argument("--verify-max-frames", type=int, default=8, help="frames of the verification clip used (default 8)")
    p.add_argument("--work-size", type=int, default=240, help="shorter side frames from folders are processed at (-1: as they are)")
    p.add_argument("--key-fp32", choices=KEY_FP32_POLICIES,
                   help="what stays float32 in the key encoder (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_KEY_FP32.items()) + ")")
    p.add_argument("--int8-quantizer", choices=INT8_QUANTIZERS, default="modelopt")
    p.add_argument("--min-iou", type=float, help="override the fp16/int8 gate's mean-IoU threshold")
    p.add_argument("--trace-size", type=int, nargs=2, metavar=("H", "W"), default=(64, 96),
                   help="size the graphs are traced at (multiples of 16; default 64 96)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-verify", action="store_true", help="skip the parity gate (recorded in the manifest)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final line")
    return p


def _config(args: argparse.Namespace) -> ExportConfig:
    thresholds = GateThresholds()
    if args.min_iou is not None:
        thresholds = GateThresholds(fp16_min_iou=args.min_iou, int8_min_iou=args.min_iou)
    return ExportConfig(
        checkpoint=args.checkpoint,
        out_dir=args.out,
        precision=args.precision,
        opset=args.opset,
        calibration=args.calibration,
        calibration_frames=args.calibration_frames,
        verify=not args.no_verify,
        verify_frames=args.verify_frames,
        verify_masks=args.verify_masks,
        verify_max_frames=args.verify_max_frames,
        work_size=args.work_size,
        overwrite=args.overwrite,
        trace=TraceShape(height=args.trace_size[0], width=args.trace_size[1]),
        key_fp32=args.key_fp32,
        int8_quantizer=args.int8_quantizer,
        thresholds=thresholds,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split("\n")) if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = (lambda _m: None) if args.quiet else (lambda m: print(f"stmae-export: {m}", flush=True))
    try:
        config = _config(args)
        if not config.checkpoint.is_file():
            raise InputError(f"checkpoint {config.checkpoint} does not exist (or is not a file)")
        result = run_export(config, log=log)
    except ExportGateError as exc:
        print(f"stmae-export: error: {_first_line(exc)}; nothing was written", file=sys.stderr)
        return EXIT_GATE
    except (ValueError, InputError, CheckpointError, ExportError, PrecisionToolMissing, OSError) as exc:
        print(f"stmae-export: error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    manifest = result.manifest
    sizes = ", ".join(f"{g.file} {g.size_bytes / 1e6:.1f} MB" for g in manifest.graphs.values())
    state = "verified" if manifest.verified else "NOT verified (--no-verify)"
    print(f"stmae-export: wrote {result.out_dir} ({manifest.precision}, opset {manifest.opset}, {state}; "
          f"{sizes}; {result.seconds['total']:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
