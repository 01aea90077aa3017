"""``stmae-serve --ray``: connect to Ray, size the engine replicas to the cluster, start them
(:func:`runtime.serve.ray_replicas.deploy`) and return the front's
:class:`runtime.serve.ray_router.RayHub` over them.

The address rules, the TCP probe and the bounded connect are
:func:`runtime.corpus.ray_runner.connect`'s (``auto`` joins ``$RAY_ADDRESS`` or the cluster
started on this machine, and says which on stderr; ``local`` starts a private Ray). Ray is
imported (through those modules) only when this runs.
"""

from __future__ import annotations

import secrets
from typing import Callable

from .config import ServeConfig
from .ray_replicas import APP_NAME, deploy


def plan(ray, device: str | None, replicas: int | None, cpus_per_replica: int) -> tuple[int, dict, str, int | None]:
    """(replicas, ray_actor_options, device, torch threads) for the cluster: one replica per
    GPU when it has GPUs (and the device is not cpu), else cluster CPUs // cpus_per_replica;
    refused (RunnerError) when the replicas cannot all be placed."""
    from ..corpus.dispatch import RunnerError
    from ..corpus.ray_runner import _check_placement

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device in (None, "auto"):
        device = "cuda" if gpus else "cpu"
    if device.startswith("cuda"):
        if not gpus:
            raise RunnerError("--device cuda but the Ray cluster has no GPU; pass --device cpu", user_error=True)
        _check_placement(ray, 1, 1, "--cpus-per-replica")
        count = replicas or gpus
        if count > gpus:
            raise RunnerError(f"--replicas {count} needs {count} GPUs (one each); the Ray cluster has {gpus}",
                              user_error=True)
        return count, {"num_gpus": 1, "num_cpus": 1}, "cuda", None
    _check_placement(ray, cpus_per_replica, 0, "--cpus-per-replica")
    count = replicas or max(1, cpus // cpus_per_replica)
    if count * cpus_per_replica > cpus:
        raise RunnerError(f"--replicas {count} x --cpus-per-replica {cpus_per_replica} needs "
                          f"{count * cpus_per_replica} CPU cores; the Ray cluster has {cpus}: pass fewer",
                          user_error=True)
    return count, {"num_cpus": cpus_per_replica}, "cpu", cpus_per_replica


def launch(address: str, backend_for: Callable[[str], Callable[[], object]], session_config, config: ServeConfig,
           model_info: dict, replicas: int | None = None, cpus_per_replica: int = 1, device: str | None = None,
           observer=None, announce: Callable[[str], None] | None = None):
    """Connect to Ray (``address``: 'local', 'auto' or a cluster's address, as
    :func:`runtime.corpus.ray_runner.connect` takes it), start the engine replicas and
    return the :class:`runtime.serve.ray_router.RayHub` over them; its ``stop()`` deletes
    them (and ends Ray if this call started it). backend_for(device): a picklable callable
    that builds the backend in a replica."""
    from ..corpus.ray_runner import START_SECONDS, _import_ray, connect
    from .ray_router import RayHub

    ray = _import_ray()
    owned = connect(ray, address)
    app_name = f"{APP_NAME}-{secrets.token_hex(4)}"  # never replaces another server's application
    try:
        count, actor_options, device, threads = plan(ray, device, replicas, cpus_per_replica)
        info = {**model_info, "device": device, "replicas": count}
        handles = deploy(backend_for(device), session_config, config, info, count, actor_options, threads,
                         app_name, START_SECONDS)
    except BaseException:
        if owned:
            ray.shutdown()
        raise
    if announce is not None:
        announce(f"{count} engine replica(s) on Ray ({actor_options}), application {app_name}")

    def stop() -> None:
        from ray import serve

        try:
            serve.delete(app_name)
        finally:
            if owned:
                serve.shutdown()
                ray.shutdown()

    return RayHub(handles, session_config, config, observer, info, on_stop=stop)
