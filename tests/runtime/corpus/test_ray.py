"""The corpus on a local Ray cluster (ray.init(num_cpus=2), shared by this module's
tests): the same masks as the sequential run, and an actor killed mid-video retried."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from runtime.corpus import records
from runtime.corpus.jobs import discover_jobs
from runtime.corpus.run import run_corpus
from runtime.corpus.worker_setup import CRASH_ENV

from .conftest import make_setup, read_outputs, stray_files

ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray)")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def assert_same(outputs: dict, reference: dict) -> None:
    assert sorted(outputs) == sorted(reference)
    for key, labels in reference.items():
        np.testing.assert_array_equal(outputs[key], labels, err_msg=key)


def test_ray_actors_match_the_sequential_run(ray_session, corpus, small_checkpoint, reference, tmp_path):
    videos, masks = corpus
    out = tmp_path / "out"
    setup = make_setup(small_checkpoint, out)
    setup = replace(setup, backend=setup.backend.with_device("auto"))  # what --ray without --device gives
    summary = run_corpus(discover_jobs(videos, masks), setup, ray="local")
    assert sorted(summary.done) == list("abcd") and not summary.failed and not summary.retried
    assert summary.runner == "Ray (local): 2 actor(s), 1 CPU core(s) each"  # no GPU in this cluster
    assert_same(read_outputs(out), reference)
    assert {records.read_record(out, n)["device"] for n in "abcd"} == {"cpu"}
    assert os.getpid() not in {records.read_record(out, n)["pid"] for n in "abcd"}  # done in the actors


def test_killed_ray_actor_has_its_video_retried(ray_session, corpus, small_checkpoint, reference, tmp_path,
                                                monkeypatch):
    videos, masks = corpus
    out = tmp_path / "out"
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv(CRASH_ENV, f"d:4:{marker}")
    summary = run_corpus(discover_jobs(videos, masks), make_setup(small_checkpoint, out), ray="local")
    assert marker.exists()
    assert sorted(summary.done) == list("abcd") and not summary.failed
    assert summary.retried == {"d": 2}
    assert_same(read_outputs(out), reference)
    assert stray_files(out) == []


def test_ray_actors_with_streams_match_and_survive_a_kill(ray_session, streams_corpus, trained, streams_reference,
                                                           tmp_path, monkeypatch):
    """Each actor steps up to 2 videos together; the actor holding alpha dies at its frame
    3 with another video in flight: both are retried, every video ends done, identical."""
    from .conftest import LENGTHS, streams_setup

    out = tmp_path / "out"
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv(CRASH_ENV, f"alpha:3:{marker}")
    summary = run_corpus(discover_jobs(*streams_corpus), streams_setup(trained, out, streams=2), ray="local")
    assert marker.exists()
    assert summary.runner == "Ray (local): 2 actor(s), 1 CPU core(s) each, 2 videos stepped together per actor"
    assert sorted(summary.done) == sorted(LENGTHS) and not summary.failed
    assert "alpha" in summary.retried and len(summary.retried) == 2 and set(summary.retried.values()) == {2}
    assert_same(read_outputs(out), streams_reference)
    assert stray_files(out) == []


@pytest.mark.timeout(300)
def test_actors_the_cluster_cannot_hold_are_refused_up_front(ray_session, corpus, small_checkpoint, tmp_path):
    """Each actor asks for 4 cores; no node of this 2-core cluster has them: one line, not a
    wait without end for an actor that can never be placed."""
    from runtime.corpus.dispatch import RunnerError

    with pytest.raises(RunnerError, match=r"--cpus-per-actor 4: no node of the Ray cluster has 4 CPU cores "
                                          r"\(the largest has 2, 2 in all\)") as caught:
        run_corpus(discover_jobs(*corpus), make_setup(small_checkpoint, tmp_path / "out"), ray="local",
                   cpus_per_actor=4)
    assert caught.value.user_error


@pytest.mark.timeout(300)
def test_actors_that_never_start_end_the_run(ray_session, corpus, small_checkpoint, tmp_path, monkeypatch):
    """Another job holds both cores: the actors stay pending; the run ends after
    START_SECONDS with one line saying what is free."""
    from runtime.corpus import ray_runner
    from runtime.corpus.dispatch import RunnerError

    @ray.remote(num_cpus=2)
    class Holder:
        def ping(self) -> int:
            return 1

    holder = Holder.remote()
    ray.get(holder.ping.remote(), timeout=120)
    monkeypatch.setattr(ray_runner, "START_SECONDS", 3.0)
    try:
        with pytest.raises(RunnerError, match=r"no Ray actor started within 3 s \(2 actor\(s\), 1 CPU core\(s\) "
                                              r"each; the cluster has 0 CPU core\(s\)"):
            run_corpus(discover_jobs(*corpus), make_setup(small_checkpoint, tmp_path / "out"), ray="local")
    finally:
        ray.kill(holder)

