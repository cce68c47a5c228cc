"""`lictor credential add|list`: issue admin and auditor credentials."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lictor.cli.client import add_client_options, call


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("credential", help="issue people's credentials")
    group = p.add_subparsers(dest="credential_command", required=True, metavar="COMMAND")
    add = group.add_parser("add", help="issue a credential and print it once")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["auditor", "admin"])
    add_client_options(add)
    add.set_defaults(func=run_add)
    listing = group.add_parser("list", help="list issued credentials (never their secrets)")
    add_client_options(listing)
    listing.set_defaults(func=run_list)


def run_add(args: argparse.Namespace) -> int:
    reply = call(args, "POST", "/v1/credentials", {"name": args.name, "role": args.role})
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        print(f"credential {reply['name']} ({reply['role']}) issued by {reply['by']}")
        print(f"credential (shown once): {reply['credential']}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    reply = call(args, "GET", "/v1/credentials")
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    for c in reply["credentials"]:
        print(f"{c['name']}\t{c['role']}\tissued by {c['by']}")
    return 0
