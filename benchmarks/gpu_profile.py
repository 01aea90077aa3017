"""Where the engine's step time goes, in steady state: per-stage device times of one
captured step, host time per frame by stage, and the costliest kernels, at 1 and 16
streams (:mod:`runtime.bench.stage_profile`).

    PYTHONPATH=. python benchmarks/gpu_profile.py                         # GPU: published, 480x864, bf16
    PYTHONPATH=. python benchmarks/gpu_profile.py --device cpu --tiny     # CPU: small model, 48p, 1 and 2 streams

Default: the published architecture (the contract's rule weights), 480p 16:9 clips
(480x864 once padded), 1 object, bf16, CUDA graphs + torch.compile, TF32 off, the
memory window full (warm-up of 101 frames: memory every 5 frames, 20 working frames plus
the first). ``--tiny`` runs the ``small`` preset (seeded) at 48p, fp32, memory every
frame, so that a CPU test finishes in seconds. Without a GPU, CUDA events are replaced by
``perf_counter`` and the kernel table lists CPU operators; the output says so.

Writes ``gpu_profile_<device name>_<date>.md`` and ``.json`` into ``--results-dir``
(default ``benchmarks/results``) and prints the markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    p.add_argument("--tiny", action="store_true", help="small preset at 48p, 1 and 2 streams, fp32: a quick CPU run")
    p.add_argument("--streams", type=int, nargs="+", default=None, help="stream counts (default 1 16; --tiny 1 2)")
    p.add_argument("--checkpoint", help="checkpoint (default: published architecture, contract rule weights)")
    p.add_argument("--size", type=int, default=None, help="shorter side (default 480; --tiny 48)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                   help="default bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--compile", choices=("on", "off"), default="on", help="torch.compile before capture (CUDA)")
    p.add_argument("--allow-tf32", action="store_true", help="allow TF32 in float32 work (default off)")
    p.add_argument("--mem-every", type=int, default=None, help="memory every N frames (default 5; --tiny 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per stage (default 20; --tiny 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; --tiny 1)")
    p.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def _fail(message: str) -> int:
    print(f"gpu_profile: error: {message}", file=sys.stderr)
    return 2


def _backend(args, device, workdir: Path):
    import torch

    from runtime.backends.factory import create_backend
    from runtime.bench.suite import _model_and_checkpoint
    from stmae import STMAE, preset, save_checkpoint

    checkpoint = args.checkpoint
    if checkpoint is None and args.tiny:
        torch.manual_seed(0)
        checkpoint = str(workdir / "small.pth")
        save_checkpoint(checkpoint, STMAE(preset("small")))
        what = "small preset, seeded (torch's default init, seed 0)"
    elif checkpoint is None:
        _, checkpoint = _model_and_checkpoint(SimpleNamespace(checkpoint=None), workdir)
        what = "published architecture, contract rule weights"
    else:
        what = checkpoint
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    backend = create_backend("torch", checkpoint=checkpoint, device=device, precision=precision,
                             options={"tf32": args.allow_tf32})
    return backend, what


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def markdown(result: dict) -> str:
    from runtime.bench.stage_profile import HOST_STAGES, STAGES

    runs = result["runs"]
    counts = [r["streams"] for r in runs]
    lines = [f"# Engine profile: {result['device_name']}, {result['date']}", "",
             f"Command: `{result['command']}`", "",
             f"Model: {result['model']}; {runs[0]['height']}x{runs[0]['width']} frames (padded "
             f"{runs[0]['padded'][0]}x{runs[0]['padded'][1]}), {runs[0]['objects']} object(s); precision "
             f"{result['precision']}; "
             f"{'CUDA graphs' if result['cuda'] else 'the static step, eager'}{' + torch.compile' if result['compile'] else ''}; "
             f"TF32 {'allowed' if result['tf32'] else 'off'}; torch {result['torch']}.", ""]
    if not result["cuda"]:
        lines += ["**No GPU: CUDA events are replaced by perf_counter** (stage times are wall times of eager "
                  "runs of the static step on the CPU; the kernel table lists CPU operators).", ""]
    lines += ["## Steady state", "", "| streams | memory frames / slots | warm-up frames | warm-up s | capture |",
              "|---|---|---|---|---|"]
    for r in runs:
        capture = "; ".join(g.get("fallback") or f"{g['compile_and_warmup_s'] + g['capture_s']:.1f} s"
                            for g in r["graph_reports"]) or "-"
        lines.append(f"| {r['streams']} | {r['memory_frames']} / {r['memory_slots']} | {r['warmup_frames']} | "
                     f"{r['warmup_s']:.1f} | {capture} |")
    lines += ["", f"## Device time per stage of one captured step, ms ({runs[0]['stages']['timer']})", "",
              "| stage | " + " | ".join(f"{s} stream(s)" for s in counts) + " | "
              + " | ".join(f"per stream-frame at {s}" for s in counts) + " |",
              "|---|" + "---|" * (2 * len(counts))]
    for stage in (*STAGES, "sum of stages", "captured step (whole graph)"):
        key = {"sum of stages": "sum_of_stages_ms", "captured step (whole graph)": "captured_step_ms"}.get(stage)
        values = [r["stages"][key] if key else r["stages"]["ms"][stage] for r in runs]
        lines.append(f"| {stage} | " + " | ".join(f"{v:.3f}" for v in values) + " | "
                     + " | ".join(f"{v / s:.3f}" for v, s in zip(values, counts)) + " |")
    lines += ["", "## Host time per frame by stage, ms per stream-frame (serial loop, "
              f"{runs[0]['host']['frames']} frames)", "",
              "| stage | " + " | ".join(f"{s} stream(s)" for s in counts) + " |", "|---|" + "---|" * len(counts)]
    for stage in HOST_STAGES:
        lines.append(f"| {stage} | " + " | ".join(f"{r['host']['ms_per_stream_frame'][stage]:.3f}" for r in runs) + " |")
    lines.append("| total | " + " | ".join(f"{sum(r['host']['ms_per_stream_frame'].values()):.3f}" for r in runs) + " |")
    for r in runs:
        k = r["kernels"]
        lines += ["", f"## The {len(k['rows'])} costliest {k['what']}, {r['streams']} stream(s): {k['source']}, "
                  f"{k['total_ms_per_step']:.3f} ms per step in all", "",
                  "| # | name | calls per step | ms per step | share |", "|---|---|---|---|---|"]
        for i, row in enumerate(k["rows"], 1):
            name = row["name"].replace("|", "/")[:110]
            lines.append(f"| {i} | `{name}` | {row['calls_per_step']:.1f} | {row['ms_per_step']:.3f} | "
                         f"{row['share']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from runtime.bench.stage_profile import ProfileSpec, profile_streams
    from stmae.atomic import atomic_write_text

    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        return _fail(f"unknown --device {args.device!r} ({exc}); use cuda or cpu")
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        return _fail("needs a CUDA GPU (torch.cuda.is_available() is False); on the CPU run --device cpu --tiny")
    if not cuda and not args.tiny:
        return _fail("--device cpu runs only with --tiny (the published model at 480p takes hours on a CPU)")
    streams = args.streams or ([1, 2] if args.tiny else [1, 16])
    try:
        specs = [ProfileSpec(streams=s, size=args.size or (48 if args.tiny else 480), compile=args.compile == "on",
                             mem_every=args.mem_every or (1 if args.tiny else 5),
                             repeats=args.repeats or (3 if args.tiny else 20),
                             host_frames=3 if args.tiny else 8, profile_steps=2 if args.tiny else 5)
                 for s in streams]
    except ValueError as exc:
        return _fail(str(exc))
    if not cuda:
        torch.set_flush_denormal(True)  # as the CLIs: denormals slow CPU convolutions many times
    threads = args.threads or (1 if args.tiny else None)
    if threads:
        torch.set_num_threads(threads)
    name = torch.cuda.get_device_name(device) if cuda else "CPU (no GPU)"
    date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    stem = f"gpu_profile_{_slug(name) if cuda else 'cpu'}{'_tiny' if args.tiny else ''}_{date}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stmae-gpu-profile-") as tmp:
        backend, model = _backend(args, device, Path(tmp))
        result = {"command": "python benchmarks/gpu_profile.py " + " ".join(shlex.quote(a) for a in
                                                                             (argv or sys.argv[1:])),
                  "device_name": name, "cuda": cuda, "date": date, "torch": torch.__version__, "model": model,
                  "precision": backend.precision, "compile": specs[0].compile and cuda, "tf32": backend.tf32,
                  "runs": []}
        for spec in specs:  # saved after each stream count: a run cut short keeps what it measured
            try:
                result["runs"].append(profile_streams(backend, spec, progress=lambda m: print(m, file=sys.stderr,
                                                                                              flush=True)))
            except Exception as exc:  # noqa: BLE001 - one line, what was measured before stays saved
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                print(f"gpu_profile: error: {spec.streams} stream(s) failed: {type(exc).__name__}: {first}",
                      file=sys.stderr)
                return 1
            text = markdown(result)
            atomic_write_text(args.results_dir / f"{stem}.md", text)
            atomic_write_text(args.results_dir / f"{stem}.json", json.dumps(result, indent=2, default=str) + "\n")
    print(text, end="")
    print(f"results: {args.results_dir / stem}.md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
