"""`lictor principal revoke`: end a principal's work and refuse its future requests."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lictor.cli.client import add_client_options, call
from lictor.core.types import EntityRef


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("principal", help="govern principals")
    group = p.add_subparsers(dest="principal_command", required=True, metavar="COMMAND")
    revoke = group.add_parser("revoke", help="revoke a principal's executions and requests")
    revoke.add_argument("principal", metavar="PRINCIPAL", help='e.g. Agent::"planner-7"')
    revoke.add_argument("--reason", required=True)
    add_client_options(revoke)
    revoke.set_defaults(func=run_revoke)


def run_revoke(args: argparse.Namespace) -> int:
    principal = EntityRef.parse(args.principal)
    body = {"principal": principal.to_json(), "reason": args.reason}
    reply = call(args, "POST", "/v1/principals/revoke", body)
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"principal {principal} revoked; {len(reply['revoked'])} execution(s) revoked")
    for execution_id in reply["revoked"]:
        print(f"  {execution_id}")
    return 0
