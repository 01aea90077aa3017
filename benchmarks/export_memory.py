"""Peak resident memory (RSS) of ``stmae-export`` per precision, one export at a time.

The published architecture with the contract's deterministic weights
(:mod:`stmae.reference_weights`) is exported with the default flags (synthetic
calibration and verification clips at the default work size, 480 -> 853x480) at each
``--precisions`` entry, each in its own process. The peak RSS is the kernel's high-water
mark of that process (``os.wait4`` -> ``ru_maxrss``); a watchdog polls the process's RSS
and kills it above ``--cap-gb`` (reported as "> CAP GiB, killed"), or when the machine has
less than ``--min-available-gb`` left, so that a run that explodes does not take the
machine (and whatever else runs on it) down.

``--tree LABEL=DIR`` (repeatable) runs the exports of the code in DIR (a checkout of this
repository), for a before/after comparison in one run, e.g.::

    git -C . archive HEAD | (mkdir -p /tmp/export-before && tar -x -C /tmp/export-before)
    nice -n 5 python benchmarks/export_memory.py --tree before=/tmp/export-before --tree after=.

``--calibration-frames 16,48`` repeats each export with these numbers of calibration
frames (the bounded-memory design: the peak must not grow with them).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GB = 1024**3  # sizes are printed in GiB


@dataclass
class Run:
    tree: str
    precision: str
    calibration_frames: int
    status: str
    peak_rss_bytes: int
    seconds: float
    last_line: str


def published_checkpoint(folder: Path) -> Path:
    """The published architecture with the contract's deterministic weights (a plain state dict)."""
    import torch

    from stmae import STMAE
    from stmae.reference_weights import reference_weights_for

    path = folder / "published_rule_weights.pth"
    torch.save(reference_weights_for(STMAE()), path)
    return path


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (0 once it has exited)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def _mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return sys.maxsize


def run_export(tree: Path, label: str, checkpoint: Path, out: Path, precision: str, calibration_frames: int | None,
               extra: list[str], cap: int, min_available: int, poll_s: float) -> Run:
    cmd = [sys.executable, "-m", "export.cli", str(checkpoint), "--out", str(out), "--precision", precision]
    if calibration_frames is not None:
        cmd += ["--calibration-frames", str(calibration_frames)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    log = out.parent / f"{out.name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd + extra, cwd=tree, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        killed, polled = None, 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = _tree_rss(proc.pid)
            polled = max(polled, rss)
            if killed is None and (rss > cap or _mem_available() < min_available):
                killed = (f"> {cap / GB:.0f} GiB, killed" if rss > cap
                          else f"killed at {rss / GB:.1f} GiB (machine below {min_available / GB:.1f} GiB available)")
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(poll_s)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    peak = max(usage.ru_maxrss * 1024, polled)  # ru_maxrss: KiB on Linux
    gate = proc.returncode == 1 and any("parity gate failed" in ln for ln in lines[-3:])
    status_text = killed or ("ok" if proc.returncode == 0 else
                             "exit 1: gate refused (ran to the end)" if gate else f"exit {proc.returncode}")
    return Run(label, precision, calibration_frames or 16, status_text, peak, seconds, lines[-1] if lines else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", metavar="LABEL=DIR",
                        help="a checkout whose export to measure (repeatable; default: this one, labelled 'this')")
    parser.add_argument("--precisions", default="fp16,int8")
    parser.add_argument("--calibration-frames", default="",
                        help="comma list of --calibration-frames values (default: the export's default)")
    parser.add_argument("--cap-gb", type=float, default=20.0, help="kill an export above this RSS, GiB (default 20)")
    parser.add_argument("--min-available-gb", type=float, default=1.0,
                        help="kill an export when the machine has less memory available than this, GiB (default 1)")
    parser.add_argument("--poll-s", type=float, default=0.1)
    parser.add_argument("--work", type=Path, help="folder for the checkpoint and exports (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="more stmae-export flags, after --")
    args = parser.parse_args()

    trees = []
    for item in args.tree or [f"this={REPO}"]:
        label, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "export" / "cli.py").is_file():
            parser.error(f"--tree {item!r}: expected LABEL=DIR with DIR a checkout of this repository")
        trees.append((label, Path(folder).resolve()))
    frames = [int(v) for v in args.calibration_frames.split(",") if v] or [None]
    work = args.work or Path(tempfile.mkdtemp(prefix="export-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = published_checkpoint(work)
    print(f"published architecture, deterministic weights; default flags{' + ' + ' '.join(args.extra) if args.extra else ''}; "
          f"{os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GB:.1f} GiB memory; "
          f"cap {args.cap_gb:g} GiB; work folder {work}", flush=True)
    runs: list[Run] = []
    for label, tree in trees:
        for precision in args.precisions.split(","):
            for n in frames:
                out = work / f"{label}_{precision}_{n or 'default'}"
                run = run_export(tree, label, checkpoint, out, precision, n, args.extra, int(args.cap_gb * GB),
                                 int(args.min_available_gb * GB), args.poll_s)
                runs.append(run)
                print(f"{run.tree:>8} {run.precision:>5} calib {run.calibration_frames:>4}: peak RSS "
                      f"{run.peak_rss_bytes / GB:6.2f} GiB  {run.status:<28} {run.seconds:7.0f} s  | {run.last_line[:160]}",
                      flush=True)
    print("\n| tree | precision | calibration frames | peak RSS GiB | result | seconds |\n|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r.tree} | {r.precision} | {r.calibration_frames} | {r.peak_rss_bytes / GB:.2f} | {r.status} | {r.seconds:.0f} |")
    if len(trees) == 2:
        (a, _), (b, _) = trees
        for precision in args.precisions.split(","):
            for n in frames:
                pair = [r for r in runs if r.precision == precision and r.calibration_frames == (n or 16)]
                ra = next((r for r in pair if r.tree == a), None)
                rb = next((r for r in pair if r.tree == b), None)
                if ra and rb and rb.peak_rss_bytes:
                    bound = ">=" if ra.status.startswith(">") or ra.status.startswith("killed") else ""
                    print(f"{precision} calib {n or 16}: {a}/{b} peak RSS {bound}{ra.peak_rss_bytes / rb.peak_rss_bytes:.2f}x")


if __name__ == "__main__":
    main()
