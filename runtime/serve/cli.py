"""``stmae-serve``: serve a model to many clients (argparse only; the work is in
:mod:`runtime.serve.server` and :mod:`runtime.serve.remote`).

- ``stmae-serve --checkpoint CKPT [--host 127.0.0.1] [--port 8000] [--token T]`` (or
  ``--export-dir DIR``) serves the model;
- ``stmae-serve client --url URL --input FRAMES|VIDEO --mask FIRST.png --out OUT`` streams
  a video through a server and writes its masks as ``stmae-segment`` does.

Bad input: one line ``stmae-serve: error: ...`` on stderr, exit status 2. ``--help`` imports
neither torch nor FastAPI.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..cli import _png_level, _resolved_size, _run, _session_config, add_model_options
from ..cpus import passive_openmp_waits
from ..errors import InputError
from .config import (
    DEFAULT_DRAIN_TIMEOUT_S, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_SESSIONS, DEFAULT_MAX_WAIT_MS, DEFAULT_QUEUE_DEPTH, TOKEN_ENV,
)

PROG = "stmae-serve"
# ServeConfig's field names -> the options that set them (for its one-line refusals)
_FLAGS = {"max_sessions": "--max-sessions", "max_batch": "--max-batch", "max_wait_ms": "--max-wait-ms",
          "queue_depth": "--queue-depth", "max_request_bytes": "--max-request-bytes", "max_pixels": "--max-pixels",
          "idle_timeout_s": "--idle-timeout", "drain_timeout_s": "--drain-timeout", "png_level": "--png-level",
          "port": "--port", "token": "--token", "host": "--host", "allowed_sources": "--allow-source"}


def _server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a model to many clients: sessions (a first frame and its mask, then frames) over HTTP "
        "and WebSocket, their frames batched into one engine step. 'stmae-serve client --help': stream a video "
        "through a server into a folder of masks. Reference: docs/serve.md",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; any other needs a token)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free port, printed)")
    parser.add_argument("--token", default=None,
                        help=f"bearer token every client must send (default: ${TOKEN_ENV}; without one the server "
                        f"binds to loopback only)")
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                        help=f"sessions open at once (default {DEFAULT_MAX_SESSIONS})")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"sessions stepped together at most (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS,
                        help=f"wait at most this long after a ready frame for other sessions' frames "
                        f"(default {DEFAULT_MAX_WAIT_MS:g})")
    parser.add_argument("--queue-depth", type=int, default=DEFAULT_QUEUE_DEPTH,
                        help=f"frames a session may have in flight; more get 429 (default {DEFAULT_QUEUE_DEPTH})")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help=f"largest request body or WebSocket message; more get 413 (default "
                        f"{DEFAULT_MAX_REQUEST_BYTES})")
    parser.add_argument("--max-pixels", type=int, default=0,
                        help="largest frame in pixels (width x height); more get 413 (default: $STMAE_MAX_PIXELS "
                        "or 64 Mpx)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S,
                        help=f"close a session without requests for this many seconds (default "
                        f"{DEFAULT_IDLE_TIMEOUT_S:g})")
    parser.add_argument("--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT_S,
                        help=f"on SIGTERM, wait at most this long for frames in flight (default "
                        f"{DEFAULT_DRAIN_TIMEOUT_S:g})")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser pages from ORIGIN (repeatable; default: CORS off)")
    parser.add_argument("--allow-source", action="append", default=[], metavar="PREFIX",
                        help="let clients open server-side sources (POST /v1/sources) whose URL starts with PREFIX: "
                        "rtsp://, rtmp://, http(s)://, udp://, tcp:// or /dev/video (repeatable; default: none)")
    parser.add_argument("--png-level", type=int, default=None, metavar="0-9",
                        help="zlib compression of the result PNGs (default 1: fast); every level gives the same labels")
    scale = parser.add_argument_group("scale-out on Ray Serve")
    scale.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                       help="run the engines as Ray Serve replicas, each session pinned to one: 'local' starts Ray "
                       "here, 'auto' joins $RAY_ADDRESS or the cluster started on this machine (ray start --head), "
                       "else the cluster at ADDRESS (host:port or ray://host:10001)")
    scale.add_argument("--replicas", type=int, default=None,
                       help="engine replicas (default: one per GPU of the cluster, else its CPU cores // "
                       "--cpus-per-replica)")
    scale.add_argument("--cpus-per-replica", type=int, default=1,
                       help="CPU cores (torch threads) of each replica without a GPU (default 1)")
    add_model_options(parser)
    return parser


def _client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} client",
        description="Stream a video through an stmae-serve server and write one palette PNG per frame, as "
        "stmae-segment writes them (same checks, same files). Reference: docs/serve.md#the-client-command",
    )
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", default=None, help=f"the server's token (default: ${TOKEN_ENV})")
    parser.add_argument("--input", required=True, help="folder of frames (jpg/png, sorted by name) or a video file")
    parser.add_argument("--mask", help="label-map PNG of the first frame: 0 = background, 1..254 = objects, "
                        "255 = void; a greyscale 0/255 mask is one object")
    parser.add_argument("--masks-dir", help="folder of masks named after frames; a later mask introduces new objects")
    parser.add_argument("--out", required=True, help="output folder for the masks")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the server at any point (default 60)")
    parser.add_argument("--overwrite", action="store_true", help="replace masks an earlier run wrote in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--png-level", type=int, default=None, metavar="0-9",
                        help="zlib compression of the mask PNGs, 0..9 (default 1: fast); same labels at every level")
    return parser


def _serve_config(args: argparse.Namespace):
    from .config import ServeConfig

    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    try:
        return ServeConfig(
            host=args.host, port=args.port, token=token, max_sessions=args.max_sessions, max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms, queue_depth=args.queue_depth, max_request_bytes=args.max_request_bytes,
            max_pixels=args.max_pixels, idle_timeout_s=args.idle_timeout, drain_timeout_s=args.drain_timeout,
            cors_origins=tuple(args.cors_origin), allowed_sources=tuple(args.allow_source), png_level=args.png_level)
    except ValueError as exc:
        text = str(exc)
        for field, flag in _FLAGS.items():
            if text.startswith(field + " "):
                text = flag + text[len(field):]
                break
        raise InputError(text) from None


def _model_info(args: argparse.Namespace) -> dict:
    """What /v1/info says of the model: its file's name and sha256 prefix, the backend."""
    import hashlib
    from pathlib import Path

    # --backend auto may have set --export-dir to the cached export of --checkpoint: the
    # model is then still the checkpoint the operator named.
    path = Path(args.checkpoint) if args.checkpoint else Path(args.export_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; give --checkpoint FILE or --export-dir DIR")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    name = path.name if args.checkpoint else Path(args.export_dir).name
    return {"name": name, "sha256": digest.hexdigest()[:16], "backend": args.backend,
            "kind": "checkpoint" if args.checkpoint else "export"}


def serve_main(argv: Sequence[str] | None = None) -> int:
    parser = _server_parser()
    args = parser.parse_args(argv)
    args.prog, args.backend_text = PROG, None
    passive_openmp_waits()  # before torch loads (runtime.cpus)

    def body() -> int:
        from ..cli import _backend

        args.png_level = _png_level(args)
        config = _serve_config(args)
        size = _resolved_size(args)  # the model options are checked before anything loads
        session = _session_config(args, size.size)
        from .server import serve

        _model_info(args)  # a missing model file is refused before anything loads

        def info() -> dict:  # after the backend is chosen (--backend auto)
            return {**_model_info(args), "size": size.text(), "mem_every": args.mem_every_text,
                    "device": args.device or "auto"}

        if args.ray is None:
            if args.replicas is not None:
                raise InputError("--replicas needs --ray (auto, local or a cluster's address)")
            return serve(config, lambda: _backend(args), session, info)
        make_hub = _ray_hub(args, config, session, {**_model_info(args), "size": size.text(),
                                                    "mem_every": args.mem_every_text})
        return serve(config, None, session, info, make_hub=make_hub)

    return _run(PROG, body)


def _ray_hub(args: argparse.Namespace, config, session, model_info: dict):
    """``--ray``: make_hub(metrics) for :func:`runtime.serve.server.serve`, starting the
    engine replicas (:func:`runtime.serve.ray_launch.launch`)."""
    for flag, value in (("--replicas", args.replicas), ("--cpus-per-replica", args.cpus_per_replica)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    if not args.ray.strip():
        raise InputError("--ray needs auto, local or a Ray cluster's address (host:port or ray://host:10001)")

    def backend_for(device: str):
        """What a replica calls to build its backend: --backend auto is resolved here, once."""
        import functools

        from ..cli import _backend, _choose_backend

        replica_args = argparse.Namespace(**{**vars(args), "device": device})
        _choose_backend(replica_args)
        return functools.partial(_backend, replica_args)

    def make_hub(metrics):
        from ..corpus.dispatch import RunnerError
        from ..errors import BackendUnavailable
        from .ray_launch import launch

        try:
            return launch(args.ray, backend_for, session, config, model_info,
                          replicas=args.replicas, cpus_per_replica=args.cpus_per_replica, device=args.device,
                          observer=metrics, announce=lambda line: print(f"{PROG}: {line}", file=sys.stderr))
        except RunnerError as exc:
            if exc.user_error:
                raise BackendUnavailable(str(exc)) from None
            raise

    return make_hub


def client_main(argv: Sequence[str] | None = None) -> int:
    parser = _client_parser()
    args = parser.parse_args(argv)

    def body() -> int:
        from .remote import segment_remote

        args.png_level = _png_level(args)
        token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
        return segment_remote(args.url, token, args.input, args.out, mask=args.mask, masks_dir=args.masks_dir,
                              max_frames=args.max_frames, overwrite=args.overwrite, png_level=args.png_level,
                              quiet=args.quiet, timeout=args.timeout)

    return _run(f"{PROG} client", body)


def main(argv: Sequence[str] | None = None) -> int:
    """``stmae-serve [options]`` serves; ``stmae-serve client [options]`` is the client."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "client":
        return client_main(argv[1:])
    return serve_main(argv)


if __name__ == "__main__":
    sys.exit(main())
