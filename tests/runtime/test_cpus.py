"""The CPUs a process may use: affinity capped by the cgroup quota (v1 and v2)."""

from __future__ import annotations

import os

from runtime import cpus


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_group_and_its_parents(tmp_path):
    _write(tmp_path / "proc", "0::/a/b\n")
    _write(tmp_path / "fs/a/b/cpu.max", "max 100000\n")
    _write(tmp_path / "fs/a/cpu.max", "150000 100000\n")
    assert cpus.cgroup_cpu_quota(tmp_path / "fs", tmp_path / "proc") == 1.5


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    _write(tmp_path / "proc", "4:cpu,cpuacct:/job\n3:memory:/job\n")
    _write(tmp_path / "fs/cpu,cpuacct/job/cpu.cfs_quota_us", "300000\n")
    _write(tmp_path / "fs/cpu,cpuacct/job/cpu.cfs_period_us", "100000\n")
    assert cpus.cgroup_cpu_quota(tmp_path / "fs", tmp_path / "proc") == 3.0
    _write(tmp_path / "fs/cpu,cpuacct/job/cpu.cfs_quota_us", "-1\n")
    assert cpus.cgroup_cpu_quota(tmp_path / "fs", tmp_path / "proc") is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 16)
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: 1.5)
    assert cpus.usable_cpus() == 2
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: None)
    assert cpus.usable_cpus() == 16
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 2)
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: 8.0)
    assert cpus.usable_cpus() == 2


def test_torch_backend_on_the_cpu_uses_no_more_threads_than_usable(monkeypatch, small_checkpoint):
    import torch

    from runtime.backends import factory

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        monkeypatch.setattr(factory, "usable_cpus", lambda: 1)
        factory.create_backend("torch", checkpoint=small_checkpoint, device="cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_passive_openmp_waits_keeps_the_users_choice(monkeypatch):
    from runtime.cpus import passive_openmp_waits

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_openmp_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_openmp_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
