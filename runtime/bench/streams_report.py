"""The report of ``stmae-bench --streams``: one markdown line per row, report.json and
report.md (see :mod:`runtime.bench.streams` for the rows)."""

from __future__ import annotations

import json
from pathlib import Path

from .report import atomic_write_text

HEAD = ["configuration", "streams", "objects", "size", "decoder", "frames/s (all streams)", "ms per stream-frame",
        "spread",
        "host overhead ms per stream-frame", "frame period p50 ms", "p99 ms", "peak MB", "TFLOP/s (peak)",
        "vs baseline", "vs sequential sessions", "mIoU vs baseline", "compile+capture s"]


def _decoder(row: dict) -> str:
    decoder = row.get("decoder", "-")
    return decoder if row.get("decode_timed", True) else f"{decoder}, not timed"


def _compile_s(row: dict) -> str:
    graph = [g for g in row["graph_reports"] if g.get("fallback") is None]
    fallback = [g["fallback"] for g in row["graph_reports"] if g.get("fallback")]
    return ", ".join(f"{g['compile_and_warmup_s'] + g['capture_s']:.1f}" for g in graph) or (
        fallback[0] if fallback else "-")


def markdown_rows(report: dict) -> str:
    """One line per row: frames/s, ms per stream-frame, host overhead, latency, memory,
    TFLOP/s, ratios."""
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in report["rows"]:
        mem = r["peak_cuda_mb"] if r["peak_cuda_mb"] is not None else r["peak_rss_mb"]

        def fmt(key: str, spec: str, suffix: str = "") -> str:
            return "-" if r.get(key) is None else format(r[key], spec) + suffix

        lines.append("| " + " | ".join([
            r["name"], str(r["streams"]), str(r["objects"]), f"{r['height']}x{r['width']}", _decoder(r),
            f"{r['aggregate_fps']:.2f}", fmt("ms_per_stream_frame", ".2f"), fmt("spread", ".0%"),
            fmt("host_overhead_ms_per_stream_frame", ".2f"),
            f"{r['latency_ms']['p50']:.1f}", f"{r['latency_ms']['p99']:.1f}",
            f"{mem:.0f}", f"{r['achieved_tflops']:.3f} ({r['peak_matmul_tflops']:.1f})",
            fmt("vs_baseline", ".2f", "x"), fmt("vs_sequential_sessions", ".2f", "x"),
            fmt("mask_miou_vs_baseline", ".4f"), _compile_s(r),
        ]) + " |")
    return "\n".join(lines) + "\n"


def config_line(report: dict) -> str:
    """Decoder, loops and TF32 of a report, in words."""
    config = report.get("config", {})
    tf32 = config.get("tf32")
    state = config.get("cuda_tf32_state", {})
    tf32_text = "unknown" if tf32 is None else ("allowed (--allow-tf32)" if tf32 else "off (IEEE float32)")
    return (f"decoder: {config.get('decoder', '?')} ({config.get('decode_workers', '?')} threads in the pipelined "
            f"loop); end-to-end loops: {', '.join(config.get('pipeline', [])) or '?'}; engine rows: median of "
            f"{config.get('repeats', 1)} interleaved run(s); TF32: {tf32_text}, torch flags {state}")


def write_stream_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """report.json and report.md (atomic writes) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    env = report["environment"]
    gpu = env["gpu"]["name"] if env.get("gpu") else "none"
    md = ["# stmae-bench --streams report", "", f"Command: `{report['command']}`", "",
          f"Machine: {env['cpu_model']}, {env['usable_cores']} usable cores; GPU: {gpu}; "
          f"matmul peak TFLOP/s {report['peak_matmul_tflops']}", "", config_line(report), "",
          "Host overhead: an end-to-end row's ms per stream-frame minus its network row's (frames already "
          "on the device, no output). Frame period: the time between a stream's consecutive frames.", "",
          markdown_rows(report)]
    atomic_write_text(paths["markdown"], "\n".join(md))
    return paths
