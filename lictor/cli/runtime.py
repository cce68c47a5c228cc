"""`lictor runtime add|list|revoke`: manage enforcement points."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lictor.cli.client import add_client_options, call


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("runtime", help="manage runtimes")
    group = p.add_subparsers(dest="runtime_command", required=True, metavar="COMMAND")
    add = group.add_parser("add", help="register a runtime and print its credential once")
    add.add_argument("name")
    add.add_argument("--region", required=True)
    add.add_argument("--cluster", required=True)
    add_client_options(add)
    add.set_defaults(func=run_add)
    listing = group.add_parser("list", help="list runtimes")
    listing.add_argument("--region")
    listing.add_argument("--cluster")
    add_client_options(listing)
    listing.set_defaults(func=run_list)
    revoke = group.add_parser("revoke", help="revoke a runtime and its active executions")
    revoke.add_argument("name")
    revoke.add_argument("--reason", required=True)
    add_client_options(revoke)
    revoke.set_defaults(func=run_revoke)


def run_add(args: argparse.Namespace) -> int:
    body = {"name": args.name, "region": args.region, "cluster": args.cluster}
    reply = call(args, "POST", "/v1/runtimes", body)
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        runtime = reply["runtime"]
        print(f"runtime {runtime['id']} added ({runtime['region']}/{runtime['cluster']})")
        print(f"credential (shown once): {reply['credential']}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    query = "&".join(
        f"{k}={v}" for k, v in (("region", args.region), ("cluster", args.cluster)) if v
    )
    reply = call(args, "GET", "/v1/runtimes" + (f"?{query}" if query else ""))
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    for runtime in reply["runtimes"]:
        attested = (runtime.get("attestation") or {}).get("state", "-")
        print(f"{runtime['id']}\t{runtime['region']}\t{runtime['cluster']}\t{attested}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    reply = call(args, "POST", f"/v1/runtimes/{args.name}/revoke", {"reason": args.reason})
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"runtime {reply['runtime']['id']} revoked; {len(reply['revoked'])} execution(s) revoked")
    for execution_id in reply["revoked"]:
        print(f"  {execution_id}")
    return 0
