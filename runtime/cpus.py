"""How many CPUs this process may really use: its affinity mask, capped by its cgroup's CPU
quota (a container limited to 2 CPUs on a 64-core host sees 64 cores in ``os.cpu_count()``
and in torch's default thread count, and its threads then queue behind each other).

Read from ``/proc/self/cgroup`` and the cgroup file system: ``cpu.max`` (cgroup v2,
``"<quota> <period>"`` or ``"max <period>"``) or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
(cgroup v1, quota -1 for none). Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where there is none), >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """The cgroup folders of this process that may hold a CPU quota, innermost first."""
    dirs: list[Path] = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        base = root if controllers == "" else None  # cgroup v2: "0::/path"
        if base is None and "cpu" in controllers.split(","):
            for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
                if (root / name).is_dir():
                    base = root / name
                    break
        if base is None:
            continue
        here = base / rel.lstrip("/")
        while True:  # the quota of any enclosing group applies too
            dirs.append(here)
            if here == base:
                break
            here = here.parent
    return dirs + [root, root / "cpu", root / "cpu,cpuacct"]


def _quota_of(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota (in CPUs, e.g. 1.5) of this process's cgroups, None if none."""
    quotas = [q for q in (_quota_of(d) for d in _cgroup_dirs(root, proc_cgroup)) if q is not None]
    return min(quotas) if quotas else None


def usable_cpus() -> int:
    """CPUs this process may use: the affinity mask capped by the cgroup quota (rounded up),
    at least 1. The default thread count of the runtime's CPU backends."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def passive_openmp_waits() -> None:
    """Let idle OpenMP threads (PyTorch's CPU kernels, libgomp) sleep at once instead of
    spinning for a while after each parallel region. On cores shared with other jobs a
    spinning thread takes the time slice that the thread doing the work needs: the README's
    segment example with ``--backend torch`` ran at 0.26-0.31 frames/s with libgomp's default
    and 2.4-3.1 frames/s with ``OMP_WAIT_POLICY=PASSIVE`` on the same busy 2-core machine
    (``benchmarks/shared_cores.py`` measures it). Call before torch is imported (libgomp reads
    the variable once, when it loads); a value the user set is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
