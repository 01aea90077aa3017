"""The final table of benchmarks/gpu_check.sh: every stmae-bench --streams report under
OUTDIR in one markdown table, then the readout kernel's table (OUTDIR/readout_kernel.log)
and the engine profile (OUTDIR/profile/gpu_profile_*.md), printed and written to
OUTDIR/gpu_check.md; all rows in OUTDIR/gpu_check.json.
Usage: python benchmarks/gpu_table.py OUTDIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime.bench.report import atomic_write_text
from runtime.bench.streams_report import config_line, markdown_rows


def collect(out: Path) -> dict:
    reports = {}
    for path in sorted(out.glob("*/report.json")):
        reports[path.parent.name] = json.loads(path.read_text())
    steps = []
    if (out / "steps.jsonl").is_file():
        steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
    readout = []
    if (out / "readout_kernel.log").is_file():
        readout = [line for line in (out / "readout_kernel.log").read_text().splitlines()
                   if line.startswith(("|", "device:"))]
    profiles = {p.name: p.read_text() for p in sorted(out.glob("profile/gpu_profile_*.md"))}
    return {"reports": reports, "steps": steps, "readout_kernel": readout, "profiles": profiles}


def table(collected: dict) -> str:
    parts = []
    for name, report in collected["reports"].items():
        gpu = (report["environment"].get("gpu") or {}).get("name", "no GPU")
        parts.append(f"### {name} ({report.get('checkpoint')}; {gpu}; matmul peak TFLOP/s "
                     f"{report.get('peak_matmul_tflops')})\n\n{config_line(report)}\n\n{markdown_rows(report)}")
    if collected.get("readout_kernel"):
        parts.append("### readout kernel (benchmarks/readout_kernel.py --quick)\n\n"
                     + "\n".join(collected["readout_kernel"]) + "\n")
    for text in collected.get("profiles", {}).values():  # its headings two levels down
        parts.append("\n".join("##" + line if line.startswith("#") else line for line in text.splitlines()) + "\n")
    steps = ", ".join(f"{s['step']}: exit {s.get('exit')}" for s in collected["steps"])
    return "\n".join(parts) + (f"\nsteps: {steps}\n" if steps else "")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python benchmarks/gpu_table.py OUTDIR (a gpu_check.sh output folder)", file=sys.stderr)
        return 2
    out = Path(argv[0])
    collected = collect(out)
    text = table(collected)
    atomic_write_text(out / "gpu_check.md", text)
    atomic_write_text(out / "gpu_check.json", json.dumps(collected, indent=2) + "\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
