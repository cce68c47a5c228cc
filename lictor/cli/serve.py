"""`lictor serve`: run a control plane on a data directory."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from lictor.datadir import TOKEN_FILE, open_data_dir
from lictor.demo.runner import DemoRunner
from lictor.errors import InvalidRequestError
from lictor.server.app import create_app
from lictor.service.log import AuditLog

DEFAULT_DATA_DIR = "./lictor-data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7300
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SHUTDOWN_GRACE_S = 3


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("serve", help="run the control plane")
    add_server_options(p)
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


@contextmanager
def running_app(args: argparse.Namespace) -> Iterator[tuple[AuditLog, FastAPI]]:
    """The data directory's log and the app over it, open (and locked) for the duration."""
    data = open_data_dir(args.data_dir, args.origin, getattr(args, "database", None))
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
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,  # event streams never end by themselves
        )
        print(
            f"lictor: serving log {log.origin} on http://{args.host}:{args.port}"
            f" (data {args.data_dir}, admin credential in {args.data_dir}/{TOKEN_FILE})",
            file=sys.stderr,
            flush=True,
        )
        uvicorn.Server(config).run()
    return 0
