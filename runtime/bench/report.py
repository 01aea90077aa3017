"""Benchmark reports: JSON (everything), a markdown table, and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

from stmae.atomic import AtomicPath, atomic_write_text
from stmae.outputs import written_by

from ..io.gate import begin_run, check_output

from .stats import STAGES

__all__ = ["atomic_write_text", "check_report_folder", "markdown_table", "write_report"]

TOOL = "stmae-bench"
REPORT_FILES = ("report.json", "report.md", "report.png")


def check_report_folder(out_dir: Path, inputs: dict[str, str | Path | None],
                        outputs: tuple[str, ...] = REPORT_FILES) -> Path:
    """Before measuring, through the output gate (:func:`runtime.io.gate.check_output`):
    ``out_dir`` must not alias an input; report files already there are replaced only if
    stmae-bench wrote them (its output record); created and proven writable. Then the
    earlier run's reports (as its record lists them) are removed and this run's record,
    listing ``outputs``, is written. Raises OutputError."""
    out_dir = Path(out_dir)
    existing = [out_dir / name for name in REPORT_FILES if (out_dir / name).exists()]
    check_output(out_dir, "--out", inputs, tool=TOOL, earlier=existing, owned=written_by(out_dir, TOOL),
                 noun="reports")
    begin_run(out_dir, TOOL, outputs=outputs, candidates=existing)
    return out_dir


def markdown_table(report: dict) -> str:
    """One row per configuration: frames/s, ratio to the baseline, per-stage p50 ms."""
    runs = report["runs"]
    head = ["configuration", "objects", "size", "frames/s (median)", "frames/s min", "spread", "frames/s x objects",
            "vs baseline", "mIoU vs ref"]
    head += [f"{s} p50 ms" for s in STAGES] + ["GFLOP/frame (key / readout / mask)", "achieved GFLOP/s (key / readout / mask)",
                                               "peak MB"]
    long_clip = any(run.get("drift_last100_over_first100") is not None for run in runs)
    if long_clip:
        head += ["last-100 / first-100", "last-100 / 100 after the window is full"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        stages = run["stages"]
        row = [
            run["name"],
            str(run["objects"]),
            f"{run['height']}x{run['width']}",
            f"{run.get('fps_median', run['fps']):.3f}",
            f"{run.get('fps_min', run['fps']):.3f}",
            f"{run.get('spread', 0.0):.0%}",
            f"{run['fps'] * run['objects']:.3f}",
            f"{run['speedup_vs_baseline']:.2f}x",
            "-" if run.get("mask_miou_vs_reference") is None else f"{run['mask_miou_vs_reference']:.4f}",
        ]
        row += [f"{stages[s]['p50']:.1f}" if s in stages else "-" for s in STAGES]
        work, achieved = run.get("gflop_per_frame", {}), run.get("achieved_gflops", {})
        parts = ("key_encoder", "memory_readout", "mask_autoencoder")
        row.append(" / ".join(f"{work[p]:.2f}" if p in work else "-" for p in parts))
        row.append(" / ".join(f"{achieved[p]:.1f}" if p in achieved else "-" for p in parts))
        row.append(f"{run['peak_memory_mb']:.0f}")
        if long_clip:
            for key in ("drift_last100_over_first100", "drift_last100_after_window_full"):
                row.append("-" if run.get(key) is None else f"{run[key]:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    repeats = report.get("repeats", 1)
    lines.append("")
    lines.append(f"frames/s: median of {repeats} interleaved run(s); vs baseline: ratio of the medians; "
                 "spread: (max - min) / median of the repeats.")
    for run in runs:
        if run.get("spread_warning"):
            lines.append(f"WARNING {run['name']} ({run['objects']} obj, {run['height']}x{run['width']}): {run['spread_warning']}")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.png into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "chart": out_dir / "report.png"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, sort_keys=False) + "\n")
    env = report["environment"]
    md = [
        "# stmae-bench report",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {env['cpu_model']}, {env['usable_cores']} usable cores, torch threads "
        f"{env['torch_threads']}; GPU: {env['gpu']['name'] if env['gpu'] else 'none'}; "
        f"measured peak {report['peak_gflops']}; TF32: "
        f"{'allowed (--allow-tf32)' if report.get('config', {}).get('tf32') else 'off (IEEE float32)'}",
        "",
        markdown_table(report),
        "Settings:",
        "",
        *[f"- {run['name']} ({run['height']}x{run['width']}, {run['objects']} obj): "
          f"{json.dumps(run.get('backend_settings', {}), sort_keys=True)}" for run in report["runs"]],
        "",
    ]
    atomic_write_text(paths["markdown"], "\n".join(md))
    _chart(report, paths["chart"])
    return paths


def _chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.6 * len(runs) + 2.5))
    names = [f"{r['name']} [{r['objects']} obj, {r['height']}x{r['width']}]" for r in runs]
    ax1.barh(names, [r["fps"] for r in runs], color="tab:blue")
    ax1.set_xlabel("frames/s (end to end)")
    ax1.invert_yaxis()
    left = [0.0] * len(runs)
    for stage in STAGES:
        vals = [r["stages"].get(stage, {}).get("mean", 0.0) for r in runs]
        ax2.barh(names, vals, left=left, label=stage)
        left = [a + b for a, b in zip(left, vals)]
    ax2.set_xlabel("mean ms per frame, by stage")
    ax2.set_yticks([])
    ax2.invert_yaxis()
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    try:
        with AtomicPath(path) as target:
            fig.savefig(target.tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
