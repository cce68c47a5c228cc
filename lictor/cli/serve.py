"""`lictor serve`: run a control plane on a data directory.

Connections are bounded (`lictor.server.connections`, ADR 17): a request's head and
body must arrive within ``--header-timeout`` and ``--body-timeout`` seconds, at most
``--max-connections`` are open, and the soft open-file limit is raised toward the hard
one before listening, the cap kept below it.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from lictor.cli.workers import serve_workers, worker_fds
from lictor.datadir import TOKEN_FILE, open_data_dir
from lictor.demo.runner import DemoRunner
from lictor.errors import InvalidRequestError
from lictor.server.app import create_app
from lictor.server.connections import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    ConnectionLimits,
    connection_cap,
    guarded_protocol,
    raise_open_file_limit,
)
from lictor.service.log import AuditLog

DEFAULT_DATA_DIR = "./lictor-data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7300
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SHUTDOWN_GRACE_S = 3
MAX_WORKERS = 64
CGROUP = Path("/sys/fs/cgroup")  # a container's own control group, as runtimes mount it
GC_YOUNG = 20_000  # allocations between collections of the young generation (CPython: 700)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("serve", help="run the control plane")
    add_server_options(p)
    p.add_argument(
        "--workers",
        type=_workers,
        help="processes serving the data directory together (one log, one key, one"
        " lineage); one process uses about one core (default: the cores this process"
        " may run on, 1 with --demo)",
    )
    p.add_argument("--worker-fds", type=worker_fds, help=argparse.SUPPRESS)
    p.add_argument(
        "--demo",
        action="store_true",
        help="let admins run the demo scenario against this server from the console"
        " (lictor demo sets it; needs a loopback --host and a fixed --port)",
    )
    p.set_defaults(func=run)


def add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="state directory (SQLite, keys)")
    p.add_argument("--host", default=DEFAULT_HOST, help="listen address")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (0: any free)")
    p.add_argument("--origin", help="log origin on first start (default: random)")
    p.add_argument(
        "--database",
        default=os.environ.get("LICTOR_DATABASE"),
        help="postgresql:// URL to keep the log in PostgreSQL, shared by replicas"
        " (env LICTOR_DATABASE; default: SQLite in the data directory)",
    )
    p.add_argument(
        "--header-timeout",
        type=_positive_seconds,
        default=DEFAULT_HEADER_TIMEOUT,
        help="seconds a request's head may take to arrive (default %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=_positive_seconds,
        default=DEFAULT_BODY_TIMEOUT,
        help="seconds a request's body may take to arrive after its head (default %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="open connections at most (default %(default)s, kept below the open-file limit)",
    )


def default_workers(cgroup: Path = CGROUP) -> int:
    """How many workers serve when ``--workers`` is not given: one per core this process
    may run on (its CPU affinity, as ``taskset`` or a CPU set limits it), fewer if its
    control group's CPU quota (``cpu.max``, or v1's ``cpu.cfs_quota_us``) is smaller
    (a container given 2 CPUs on a larger host), at most `MAX_WORKERS`."""
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, min(cores, MAX_WORKERS))


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The CPUs the control group mounted at ``cgroup`` may use (quota over period), or
    None without a quota, or where none can be read."""
    try:
        if (cgroup / "cpu.max").exists():  # v2: "max 100000" or "200000 100000"
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = cgroup / "cpu"
        quota = (v1 / "cpu.cfs_quota_us").read_text().strip()
        period = (v1 / "cpu.cfs_period_us").read_text().strip()
        return None if int(quota) <= 0 else int(quota) / int(period)  # -1: no quota
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _workers(text: str) -> int:
    count = int(text)
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"--workers takes 1 to {MAX_WORKERS}: {text}")
    return count


def _positive_seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text}")
    return seconds


def connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    """The options' limits, after raising the open-file limit the connection cap must fit."""
    if args.max_connections < 1:
        raise InvalidRequestError("--max-connections must be at least 1")
    cap = connection_cap(args.max_connections, raise_open_file_limit())
    return ConnectionLimits(args.header_timeout, args.body_timeout, cap)


@contextmanager
def running_app(args: argparse.Namespace) -> Iterator[tuple[AuditLog, FastAPI]]:
    """The data directory's log and the app over it, open (and locked) for the duration:
    locked by this process, or by the server whose worker it is (``--worker-fds``)."""
    fds = getattr(args, "worker_fds", None)
    database = getattr(args, "database", None)
    data = open_data_dir(args.data_dir, args.origin, database, held_lock=fds[0] if fds else None)
    try:
        log = AuditLog(data.store, data.signer)
    except BaseException:
        data.close()
        raise
    try:
        yield log, create_app(log, data.grant_seed)
    finally:
        log.close()
        data.close()


def run(args: argparse.Namespace) -> int:
    if args.demo and (args.port == 0 or args.host not in LOOPBACK):
        raise InvalidRequestError("--demo needs a loopback --host and a fixed --port")
    if args.workers is None:
        args.workers = 1 if args.demo or args.worker_fds else default_workers()
    if args.demo and args.workers > 1:
        raise InvalidRequestError("--demo runs in one process: leave out --workers")
    limits = connection_limits(args)
    if args.workers > 1 and args.worker_fds is None:
        announce = (
            f"lictor: serving data {args.data_dir} on http://{args.host}:{{port}} with"
            f" {{workers}} workers (admin credential in {args.data_dir}/{TOKEN_FILE};"
            f" at most {limits.max_connections} connections each)"
        )
        return serve_workers(args, announce)
    with running_app(args) as (log, app):
        if args.demo:
            token = (Path(args.data_dir) / TOKEN_FILE).read_text().strip()
            app.state.demo = DemoRunner(args.port, token)
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            http=guarded_protocol(limits),
            ws="none",
            proxy_headers=False,  # nothing reads the client's address: no layer to rewrite it
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,  # event streams never end by themselves
        )
        settle_collector()
        if args.worker_fds is not None:  # a worker: the server announced itself
            sock = socket.socket(fileno=args.worker_fds[1])
            uvicorn.Server(config).run(sockets=[sock])
            return 0
        print(
            f"lictor: serving log {log.origin} on http://{args.host}:{args.port}"
            f" (data {args.data_dir}, admin credential in {args.data_dir}/{TOKEN_FILE};"
            f" at most {limits.max_connections} connections)",
            file=sys.stderr,
            flush=True,
        )
        uvicorn.Server(config).run()
    return 0


def settle_collector() -> None:
    """Tune the garbage collector for serving: what starting made (modules, the app,
    compiled policy) lives as long as the server, so it is frozen out of every
    collection; and the young generation is collected every `GC_YOUNG` allocations
    instead of 700, since a decision makes thousands of short-lived objects that
    reference counting frees and a collection would only traverse."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
