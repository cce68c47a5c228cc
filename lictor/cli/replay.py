"""`lictor replay EXECUTION_ID`: evaluate an execution's logged decisions again.

Each decision is re-run with its recorded inputs, policy version and entity
version. Exit 0 when every one comes out identical, 1 when any differs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lictor.cli.client import add_client_options, call


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay", help="re-evaluate an execution's logged decisions"
    )
    p.add_argument("execution_id", metavar="EXECUTION_ID")
    add_client_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    reply = call(args, "GET", f"/v1/executions/{args.execution_id}/replay")
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        for d in reply["decisions"]:
            verdict = "identical" if d["identical"] else "DIFFERENT"
            allowed = "allow" if d["recorded"]["allowed"] else "deny"
            version = d["recorded"]["policy_version"][:12]
            print(f"#{d['log_index']} {allowed} under {version}: {verdict}")
            if not d["identical"]:
                print(f"  recorded: {json.dumps(d['recorded'], sort_keys=True)}")
                print(f"  replayed: {json.dumps(d['replayed'], sort_keys=True)}")
        print("identical" if reply["identical"] else "different")
    return 0 if reply["identical"] else 1
