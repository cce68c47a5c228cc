"""`lictor entity put|show`: replace and read the entity set policies decide with.

    lictor entity put FILE.json [--json]     FILE: a JSON list in Cedar's entity JSON form
    lictor entity show [--json]

`put` replaces the whole set; the server validates it, versions it and logs
the change. A FILE that cannot be read or is not a JSON list is an
`InvalidRequestError` naming it, raised before anything is sent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lictor.cli.client import add_client_options, call
from lictor.core.types import EntityRef
from lictor.errors import InvalidRequestError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("entity", help="replace and read the entity set")
    cmds = parser.add_subparsers(dest="entity_command", required=True, metavar="COMMAND")
    put = cmds.add_parser("put", help="replace the entity set with a JSON file")
    put.add_argument("file", metavar="FILE", help="a JSON list of entities")
    add_client_options(put)
    put.set_defaults(func=run_put)
    show = cmds.add_parser("show", help="print the entity set and its version")
    add_client_options(show)
    show.set_defaults(func=run_show)


def read_entities(path: str) -> list[Any]:
    """The JSON list in ``path``."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InvalidRequestError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise InvalidRequestError(f"{path}: not JSON: {e}") from None
    if not isinstance(value, list):
        raise InvalidRequestError(f"{path}: must hold a JSON list of entities")
    return value


def run_put(args: argparse.Namespace) -> int:
    entities = read_entities(args.file)
    reply = call(args, "PUT", "/v1/entities", {"entities": entities})
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        print(f"entities version {reply['version']} ({len(entities)} entities)")
    return 0


def _ref(value: Any) -> str:
    """``Type::"id"`` for a reference in either of Cedar's JSON forms; else its JSON."""
    if isinstance(value, dict) and "__entity" in value:
        value = value["__entity"]
    try:
        return str(EntityRef.from_json(value))
    except InvalidRequestError:
        return json.dumps(value)


def _line(entity: dict[str, Any]) -> str:
    parts = [_ref(entity.get("uid"))]
    if entity.get("parents"):
        parts.append("in " + ", ".join(_ref(p) for p in entity["parents"]))
    if entity.get("attrs"):
        parts.append(json.dumps(entity["attrs"], sort_keys=True))
    return "  ".join(parts)


def run_show(args: argparse.Namespace) -> int:
    reply = call(args, "GET", "/v1/entities")
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"version {reply['version']}")
    for entity in reply["entities"]:
        print(_line(entity))
    return 0
