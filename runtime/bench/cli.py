"""`stmae-bench`: per-stage latency, frames/s and memory of the runtime's configurations,
each as a ratio to the eager baseline measured in the same run."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..mem_interval import AUTO, parse_mem_every


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stmae-bench",
        description="Benchmark STMAE configurations against the eager baseline (same run, same inputs).",
    )
    p.add_argument("--run", action="append", default=[], metavar="SPEC",
                   help="a configuration: torch:fp32, torch:fp16 (CUDA), onnxruntime:EXPORT_DIR, "
                        "tensorrt:EXPORT_DIR; repeat for several (default: torch:fp32)")
    p.add_argument("--checkpoint", help="checkpoint file (default: the published architecture "
                                        "with the contract's deterministic weights)")
    p.add_argument("--input", help="a folder of frames (default: a synthetic clip)")
    p.add_argument("--mask", help="the first frame's mask (with --input)")
    p.add_argument("--frames", type=int, default=30, help="clip length (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="leading frames not measured (default 3)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="shorter sides (default: the --checkpoint's processing size, else 480)")
    p.add_argument("--repeats", type=int, default=None,
                   help="measure every configuration this many times, interleaved, and report min/median "
                        "(default 3 for clips of up to 100 frames, else 1; with --streams: the engine rows, "
                        "default 1)")
    p.add_argument("--objects", type=int, nargs="+", default=[1], help="object counts, synthetic clip (default 1)")
    p.add_argument("--mem-every", type=parse_mem_every, default=AUTO,
                   help="memory interval in frames (default auto: the --checkpoint's recorded one, else 5)")
    p.add_argument("--top-k", type=int, default=30)
    p.add_argument("--max-memory-frames", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--streams", type=int, nargs="+", default=None, metavar="S",
                   help="measure the batched engine for S streams at once (e.g. 1 4 16) against the "
                        "eager baseline and S sequential sessions; torch runs only")
    p.add_argument("--cuda-graphs", choices=("on", "off"), default="on",
                   help="with --streams on CUDA: also measure the engine captured in CUDA graphs (default on)")
    p.add_argument("--compile", choices=("on", "off"), default="off",
                   help="with --streams and CUDA graphs: torch.compile (inductor, freezing) before capture")
    p.add_argument("--sequential", choices=("on", "off"), default="on",
                   help="with --streams: also run the baseline and sequential sessions (default on)")
    p.add_argument("--decoder", choices=("cpu", "nvjpeg"), default="cpu",
                   help="with --streams: how the engine decodes frames: cpu (libjpeg via PIL in a thread pool, "
                        "ahead of the step; the default, the masks of stmae-segment) or nvjpeg (CUDA)")
    p.add_argument("--pipeline", choices=("on", "off", "both"), default="both",
                   help="with --streams: the engine's end-to-end loop: on (decode ahead, submit t+1 before "
                        "waiting for t, writer pool), off (serial: decode, submit, write, wait) or both (default)")
    p.add_argument("--decode-workers", type=int, default=None,
                   help="with --streams: decode and write threads of the pipelined loop (default: cores, <= 16)")
    p.add_argument("--allow-tf32", action="store_true",
                   help="CUDA: let float32 products and convolutions use TF32 (default off: IEEE float32)")
    p.add_argument("--out", required=True, help="folder for report.json, report.md, report.png")
    return p


def _streams_main(args, argv) -> int:
    from ..config import SessionConfig
    from .streams import StreamSuiteSpec, markdown_rows, run_stream_suite, write_stream_report
    from .harness import RunSpec

    runs = [RunSpec.parse(r) for r in (args.run or ["torch:fp32"])]
    if any(r.backend != "torch" for r in runs):
        raise ValueError("--streams measures the torch engine: give --run torch:fp32, torch:bf16 or torch:fp16")
    spec = StreamSuiteSpec(
        streams=tuple(args.streams), precisions=tuple(dict.fromkeys(r.precision for r in runs)),
        cuda_graphs=args.cuda_graphs == "on", compile=args.compile == "on", sequential=args.sequential == "on",
        sizes=tuple(args.sizes), objects=tuple(args.objects), frames=args.frames, warmup=args.warmup,
        session=SessionConfig(mem_every=args.mem_every, top_k=args.top_k, max_memory_frames=args.max_memory_frames),
        checkpoint=args.checkpoint, device=args.device, decoder=args.decoder, pipeline=args.pipeline,
        tf32=args.allow_tf32, decode_workers=args.decode_workers,
        repeats=args.repeats if args.repeats is not None else 1,
    )
    if args.input is not None:
        raise ValueError("--streams uses synthetic clips (one per stream); leave out --input")
    from .report import check_report_folder

    # the same output gate as the clip suite, before anything is measured
    out = check_report_folder(Path(args.out), {"--checkpoint": args.checkpoint, "--mask": args.mask},
                              outputs=("report.json", "report.md"))
    command = "stmae-bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report = run_stream_suite(spec, command, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                              on_rows=lambda partial: write_stream_report(partial, out))
    paths = write_stream_report(report, out)
    print(markdown_rows(report), end="")
    print(f"report: {paths['json']}  {paths['markdown']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..cpus import passive_openmp_waits

    passive_openmp_waits()  # before torch loads: idle threads sleep instead of spinning on shared cores
    import torch

    from ..config import SessionConfig
    from ..errors import BackendUnavailable, InputError
    from stmae.outputs import OutputError

    from .harness import ClipSettings, RunSpec
    from .report import check_report_folder, markdown_table, write_report
    from .suite import SuiteSpec, run_suite

    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        if torch.device(args.device).type == "cpu":
            torch.set_flush_denormal(True)
        sizes = args.sizes
        if sizes is None:
            from ..sizing import PUBLISHED_SIZE, checkpoint_size

            sizes = [checkpoint_size(args.checkpoint).size if args.checkpoint else PUBLISHED_SIZE]
        from ..mem_interval import resolve_mem_every

        args.mem_every = resolve_mem_every(args.mem_every, checkpoint=args.checkpoint).every
        repeats = args.repeats if args.repeats is not None else (3 if args.frames <= 100 else 1)
        if args.streams is not None:
            args.sizes = sizes
            return _streams_main(args, argv)
        if args.decoder != "cpu":
            raise ValueError("--decoder nvjpeg applies to the engine rows of --streams; the clip suite decodes on the CPU")
        spec = SuiteSpec(
            runs=tuple(RunSpec.parse(r) for r in (args.run or ["torch:fp32"])),
            clip=ClipSettings(
                frames=args.frames, warmup=args.warmup,
                session=SessionConfig(mem_every=args.mem_every, top_k=args.top_k, max_memory_frames=args.max_memory_frames),
            ),
            sizes=tuple(sizes), objects=tuple(args.objects), checkpoint=args.checkpoint,
            input_dir=args.input, mask=args.mask, device=args.device, repeats=repeats, tf32=args.allow_tf32,
        )
        inputs = {"--input": args.input, "--mask": args.mask, "--checkpoint": args.checkpoint}
        inputs.update({f"--run {r.backend}:{r.export_dir}": r.export_dir for r in spec.runs if r.export_dir})
        check_report_folder(Path(args.out), inputs)
        command = "stmae-bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        report = run_suite(spec, command, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        paths = write_report(report, Path(args.out))
    except (ValueError, InputError, BackendUnavailable, OutputError, RuntimeError) as exc:
        text = " ".join(line.strip() for line in str(exc).strip().splitlines()) or type(exc).__name__
        print(f"stmae-bench: error: {text}", file=sys.stderr)
        return 2
    for warning in report.get("warnings", []):
        print(f"stmae-bench: warning: {warning}", file=sys.stderr)
    print(markdown_table(report), end="")
    print(f"report: {paths['json']}  {paths['markdown']}  {paths['chart']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
