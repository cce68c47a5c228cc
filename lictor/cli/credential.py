"""`lictor credential issue|add|list|rotate|revoke`: credentials and their lifecycle.

A secret is printed once, when it is issued or rotated, and never again.
Rotating the credential this command authenticated with, read from a file
(``--credential-file``, or ``./lictor-data/admin.token`` by default), rewrites
that file with the new secret (mode 0600, atomically): run on the server's
host, ``lictor credential rotate admin`` rotates the bootstrap admin token and
its ``<data-dir>/admin.token`` together. ``--out FILE`` writes the new secret to
FILE instead of printing it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lictor.cli.client import DEFAULT_CREDENTIAL_FILE, add_client_options, call
from lictor.datadir import replace_private
from lictor.errors import InvalidRequestError

ROLE_CHOICES = ["auditor", "admin"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("credential", help="manage credentials")
    group = p.add_subparsers(dest="credential_command", required=True, metavar="COMMAND")
    issue = group.add_parser("issue", help="issue a credential and print it once")
    issue.add_argument("--name", required=True)
    _issue_options(issue)
    add = group.add_parser("add", help="issue a credential and print it once (NAME given first)")
    add.add_argument("name")
    _issue_options(add)
    listing = group.add_parser("list", help="list credentials: state and expiry, never secrets")
    add_client_options(listing)
    listing.set_defaults(func=run_list)
    rotate = group.add_parser("rotate", help="replace a credential's secret; print it once")
    rotate.add_argument("target", metavar="NAME", help="a credential's name or key id (key:...)")
    rotate.add_argument("--ttl", type=int, help="seconds the new secret lives (default: as before)")
    rotate.add_argument("--out", help="write the new secret to this file (0600) instead")
    add_client_options(rotate)
    rotate.set_defaults(func=run_rotate)
    revoke = group.add_parser("revoke", help="revoke a credential for good")
    revoke.add_argument("target", metavar="NAME", help="a credential's name or key id (key:...)")
    revoke.add_argument("--reason", default="")
    add_client_options(revoke)
    revoke.set_defaults(func=run_revoke)


def _issue_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", required=True, choices=ROLE_CHOICES)
    p.add_argument("--ttl", type=int, help="seconds until it expires (default: never)")
    add_client_options(p)
    p.set_defaults(func=run_add)


def run_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "role": args.role}
    if args.ttl is not None:
        body["ttl"] = args.ttl
    reply = call(args, "POST", "/v1/credentials", body)
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        print(f"credential {reply['name']} ({reply['role']}) issued by {reply['by']}")
        print(f"key id {reply['key_id']}, expires {_when(reply['expires_at_ms'])}")
        print(f"credential (shown once): {reply['credential']}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    reply = call(args, "GET", "/v1/credentials")
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print("NAME\tROLE\tSTATE\tEXPIRES\tKEY ID\tISSUED BY")
    for c in reply["credentials"]:
        key = c["key_id"] or "-"
        by = c["by"] or "-"
        expires = _when(c["expires_at_ms"])
        print(f"{c['name']}\t{c['role']}\t{c['state']}\t{expires}\t{key}\t{by}")
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    body = {} if args.ttl is None else {"ttl": args.ttl}
    own_file = _credential_file(args)
    reply = call(args, "POST", f"/v1/credentials/{args.target}/rotate", body)
    secret = reply.pop("credential")
    written = None
    if args.out:
        written = Path(args.out)
    elif reply["self"] and own_file is not None:
        written = own_file  # the secret this command used is dead: keep the file working
    if written is not None:
        try:
            replace_private(written, secret + "\n")
        except OSError as e:  # the old secret is dead: the new one must not be lost
            print(f"credential (shown once): {secret}")
            raise InvalidRequestError(f"rotated, but cannot write {written}: {e}") from e
    if args.json:
        print(json.dumps({**reply, "written_to": str(written) if written else None}, indent=2))
        return 0
    print(f"credential {reply['name']} rotated: key id {reply['key_id']}")
    print(f"expires {_when(reply['expires_at_ms'])}")
    if written is not None:
        print(f"new secret written to {written}")
    else:
        print(f"credential (shown once): {secret}")
        if reply["self"]:
            print("lictor: this command's own credential was rotated", file=sys.stderr)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    reply = call(args, "POST", f"/v1/credentials/{args.target}/revoke", {"reason": args.reason})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    c = reply["credential"]
    print(f"credential {c['name']} ({c['role']}) revoked by {c['revoked_by']}")
    return 0


def _credential_file(args: argparse.Namespace) -> Path | None:
    """The file this command reads its credential from, if it reads one (`client.credential`)."""
    if args.credential_file:
        return Path(args.credential_file)
    if os.environ.get("LICTOR_CREDENTIAL"):
        return None
    default = Path(DEFAULT_CREDENTIAL_FILE)
    return default if default.is_file() else None


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
