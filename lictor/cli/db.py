"""`lictor db migrate`: bring a store's schema to this version of Lictor.

    lictor db migrate [--data-dir DIR] [--database postgresql://...]

Opening a store applies the migrations it lacks, in order, and refuses a
schema newer than this Lictor knows (exit 1, ``unknown_schema``); `lictor
serve` does the same on start. This command does it on its own, before
replicas of a new version are started, and prints the schema version.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from lictor.datadir import DB_FILE, lock_data_dir
from lictor.errors import InvalidRequestError
from lictor.store.base import Store


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="the database's schema")
    cmds = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    p = cmds.add_parser("migrate", help="apply the schema migrations this version has")
    p.add_argument("--data-dir", default="./lictor-data", help="for SQLite: its directory")
    p.add_argument(
        "--database",
        default=os.environ.get("LICTOR_DATABASE"),
        help="postgresql:// URL (env LICTOR_DATABASE)",
    )
    p.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    store: Store
    if args.database:
        from lictor.store.postgres import SCHEMA_VERSION, PostgresStore

        store, version, where = PostgresStore(args.database), SCHEMA_VERSION, "PostgreSQL"
    else:
        from lictor.store.sqlite import SCHEMA_VERSION as SQLITE_VERSION
        from lictor.store.sqlite import SQLiteStore

        root = Path(args.data_dir)
        if not (root / DB_FILE).exists():
            raise InvalidRequestError(f"no Lictor database in {root}")
        lock = lock_data_dir(root)  # not while a server has it open
        try:
            path = root / DB_FILE
            store, version, where = SQLiteStore(path), SQLITE_VERSION, str(path)
        finally:
            os.close(lock)
    store.close()
    print(f"{where}: schema version {version}")
    return 0
