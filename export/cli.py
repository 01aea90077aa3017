"""``stmae-export CHECKPOINT --out DIR [--precision fp32|fp16|int8] [--target cpu|tensorrt]
[--opset N] [--calibration FRAMES_DIR] [--overwrite] [--no-verify]``.

Exit status: 0 on success; 1 when the parity gate fails (nothing is written); 2 for bad
input (missing checkpoint, existing --out without --overwrite, bad opset, empty
calibration folder, ...). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.errors import InputError

# Only light imports here: --help must not load torch, onnx or ModelOpt (the exporter is
# imported inside main).
from .config import DEFAULT_KEY_FP32, ExportConfig, GateThresholds
from .options import DEFAULT_OPSET, DEFAULT_TARGET, INT8_QUANTIZERS, KEY_FP32_POLICIES, MAX_OPSET, MIN_OPSET, TARGETS, TraceShape

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
    p.add_argument("--calibration-frames", type=int, default=ExportConfig.calibration_frames,
                   help=f"frames used for calibration (default {ExportConfig.calibration_frames}); their graph inputs "
                   "are written to disk beside --out and read back one at a time (published architecture at "
                   "853x480: about 56 MB a frame), so memory does not grow with this number")
    p.add_argument("--verify-frames", type=Path, help="folder of frames the pipelines are compared on (default: a synthetic clip)")
    p.add_argument("--verify-masks", type=Path, help="ground-truth masks of --verify-frames (<frame name>.png) for J&F")
    p.add_argument("--verify-max-frames", type=int, default=ExportConfig.verify_max_frames,
                   help=f"frames of the verification clip used (default {ExportConfig.verify_max_frames})")
    p.add_argument("--work-size", type=int, default=None,
                   help="shorter side the calibration/verification frames are processed at, and the synthetic clips' "
                   "size (default: the checkpoint's processing size, else 480; -1: as they are)")
    p.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET,
                   help="what the export will run on; picks the int8 layout: cpu = ONNX Runtime's CPU provider "
                   "(its QDQ quantizer, a Q/DQ pair per reader, CSE off), tensorrt = ModelOpt Q/DQ "
                   f"(default {DEFAULT_TARGET})")
    p.add_argument("--key-fp32", choices=KEY_FP32_POLICIES,
                   help="what stays float32 in the key encoder (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_KEY_FP32.items()) + ")")
    p.add_argument("--int8-quantizer", choices=INT8_QUANTIZERS, default=None,
                   help="override the int8 tool that --target picks (cpu: onnxruntime, tensorrt: modelopt)")
    p.add_argument("--min-iou", type=float, help="override the fp16/int8 gate's mean-IoU threshold (clips without ground truth)")
    p.add_argument("--max-jf-drop", type=float,
                   help="override the fp16/int8 gate's largest accepted J&F drop against fp32 (clips with ground truth; "
                   "defaults: fp16 0.01, int8 0.03)")
    p.add_argument("--trace-size", type=int, nargs=2, metavar=("H", "W"), default=(64, 96),
                   help="size the graphs are traced at (multiples of 16; default 64 96)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-verify", action="store_true", help="skip the parity gate (recorded in the manifest)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final line")
    return p


def _config(args: argparse.Namespace) -> ExportConfig:
    overrides: dict = {}
    if args.min_iou is not None:
        overrides.update(fp16_min_iou=args.min_iou, int8_min_iou=args.min_iou)
    if args.max_jf_drop is not None:
        overrides.update(fp16_max_jf_drop=args.max_jf_drop, int8_max_jf_drop=args.max_jf_drop)
    thresholds = GateThresholds(**overrides)
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
        target=args.target,
        int8_quantizer=args.int8_quantizer,
        thresholds=thresholds,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split("\n")) if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = (lambda _m: None) if args.quiet else (lambda m: print(f"stmae-export: {m}", flush=True))
    from stmae.checkpoint import CheckpointError

    from .exporter import ExportError, ExportGateError, run_export
    from .precision import PrecisionToolMissing

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
    target = f", target {manifest.target}" if manifest.precision == "int8" else ""
    print(f"stmae-export: wrote {result.out_dir} ({manifest.precision}{target}, opset {manifest.opset}, "
          f"processing size {manifest.processing_size}, {state}; {sizes}; {result.seconds['total']:.0f} s)")
    gate = manifest.verification.get("gate")
    if gate:
        print(f"stmae-export: gate passed: {gate['measured']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
