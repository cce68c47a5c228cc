"""`lictor exec`: find, inspect, trace and revoke executions.

    lictor exec list [--state S] [--principal P] [--runtime R] [--region G]
                     [--action A] [--after ID] [--limit N] [--json]
    lictor exec show ID [--json]
    lictor exec revoke ID --reason TEXT [--json]
    lictor exec lineage ID [--json]

Principals and actions are written as Cedar writes them, ``Agent::"planner-7"``;
an action without ``::`` means ``Action::"<it>"``. Filters match the state an
execution was stored with (an active execution whose lease ran out is listed as
active; `show` also prints its effective state). When more executions match
than ``--limit``, `list` says on stderr how to ask for the next page. A revoke
also revokes every live descendant; it prints every id it revoked.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from lictor.cli.client import add_client_options, call
from lictor.core.types import EntityRef, ExecutionState

COLUMNS = ("id", "state", "principal", "action", "resource", "runtime")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("exec", help="find, inspect, trace and revoke executions")
    cmds = parser.add_subparsers(dest="exec_command", required=True, metavar="COMMAND")
    _register_list(cmds)
    _one(cmds, "show", "an execution and every transition, with log indexes", run_show)
    revoke = _one(cmds, "revoke", "revoke an execution and its live descendants", run_revoke)
    revoke.add_argument("--reason", required=True, metavar="TEXT", help="why (logged)")
    _one(cmds, "lineage", "an execution's ancestors and descendants, as a tree", run_lineage)


def _one(
    cmds: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """A command about one execution, named by its ID."""
    p = cmds.add_parser(name, help=help_text)
    p.add_argument("id", metavar="ID")
    add_client_options(p)
    p.set_defaults(func=func)
    return p


def _register_list(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("list", help="list executions, ordered by id")
    states = [str(s) for s in ExecutionState]
    p.add_argument("--state", choices=states, metavar="S", help=" | ".join(states))
    p.add_argument("--principal", metavar="P", help='e.g. Agent::"planner-7"')
    p.add_argument("--runtime", metavar="R", help="runtime name")
    p.add_argument("--region", metavar="G", help="runtime region")
    p.add_argument("--action", metavar="A", help='e.g. Action::"deploy" or deploy')
    p.add_argument("--after", metavar="ID", help="start after this id (the next page)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (1..1000)")
    add_client_options(p)
    p.set_defaults(func=run_list)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _time(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _path(execution_id: str) -> str:
    return quote(execution_id, safe="")


def _ref(value: dict[str, str]) -> str:
    return str(EntityRef.from_json(value))


# list


def _entity(text: str | None, default_type: str | None = None) -> str | None:
    """``Type::"id"`` checked and in canonical form; a bare id takes ``default_type``."""
    if not text:
        return None
    if default_type is not None and "::" not in text:
        return str(EntityRef(default_type, text))
    return str(EntityRef.parse(text))


def _filters(args: argparse.Namespace) -> dict[str, str]:
    """The query: given filters only, entity references in the form the server tags."""
    given = {
        "state": args.state,
        "principal": _entity(args.principal),
        "runtime": args.runtime,
        "region": args.region,
        "action": _entity(args.action, "Action"),
        "after": args.after,
    }
    return {k: v for k, v in given.items() if v} | {"limit": str(args.limit)}


def _row(e: dict[str, Any]) -> tuple[str, ...]:
    refs = (_ref(e["principal"]), _ref(e["action"]), _ref(e["resource"]))
    return (e["id"], e["state"], *refs, e["runtime_id"] or "-")


def _table(rows: list[tuple[str, ...]]) -> Iterator[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()


def run_list(args: argparse.Namespace) -> int:
    reply = call(args, "GET", "/v1/executions", params=_filters(args))
    if args.json:
        _print_json(reply)
        return 0
    rows = [_row(v["execution"]) for v in reply["executions"]]
    if rows:
        print("\n".join(_table([tuple(c.upper() for c in COLUMNS), *rows])))
    if reply.get("next"):
        print(f"more: repeat with --after {reply['next']}", file=sys.stderr)
    return 0


# show


def _decision(decision: dict[str, Any] | None) -> str:
    if decision is None:
        return "-"
    verdict = "allow" if decision["allowed"] else f"deny ({decision['reason_code']})"
    because = ", ".join(decision.get("reasons") or [])
    return f"{verdict} by {because}" if because else verdict


def _summary(view: dict[str, Any]) -> Iterator[tuple[str, str]]:
    e = view["execution"]
    state = e["state"]
    effective = view.get("effective_state")
    yield "execution", e["id"]
    yield "state", state if effective in (None, state) else f"{state} (effectively {effective})"
    yield "principal", _ref(e["principal"])
    yield "action", _ref(e["action"])
    yield "resource", _ref(e["resource"])
    yield "runtime", e["runtime_id"] or "-"
    yield "parent", e["parent_id"] or "-"
    yield "root", e["root_id"]
    yield "depth", str(e["depth"])
    yield "policy", e["policy_version"] or "-"
    yield "decision", _decision(view.get("decision"))
    yield "created", _time(e["created_at_ms"])
    if e["outcome"]:
        yield (
            "outcome",
            e["outcome"] + (f" (exit {e['exit_code']})" if e["exit_code"] is not None else ""),
        )
    if e["reason"]:
        yield "reason", e["reason"]


def _transition(step: dict[str, Any]) -> str:
    line = f"  #{step['log_index']:<6} {_time(step['at_ms'])}  {step['state']:<9}"
    return f"{line}  {step['reason']}" if step.get("reason") else line.rstrip()


def run_show(args: argparse.Namespace) -> int:
    view = call(args, "GET", f"/v1/executions/{_path(args.id)}")
    if args.json:
        _print_json(view)
        return 0
    for label, value in _summary(view):
        print(f"{label:<10} {value}")
    print("transitions (log index, time, state, reason)")
    for step in view["transitions"]:
        print(_transition(step))
    return 0


# revoke


def run_revoke(args: argparse.Namespace) -> int:
    reply = call(args, "POST", f"/v1/executions/{_path(args.id)}/revoke", {"reason": args.reason})
    if args.json:
        _print_json(reply)
        return 0
    revoked = reply.get("revoked", [])
    print(f"revoked {len(revoked)} execution(s)" + (":" if revoked else ""))
    for execution_id in revoked:
        print(f"  {execution_id}")
    return 0


# lineage


def _tree(executions: list[dict[str, Any]], target: str) -> Iterator[str]:
    """Each execution under its parent, root first; ``executions`` holds one chain of
    ancestors, the target and its descendants, so the root is the first."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for e in executions[1:]:
        children.setdefault(e["parent_id"], []).append(e)
    stack = [(executions[0], 0)]
    while stack:
        e, level = stack.pop()
        refs = " ".join(_ref(e[k]) for k in ("principal", "action", "resource"))
        mark = "  <- this" if e["id"] == target else ""
        yield f"{'  ' * level}{e['id']}  {e['state']}  {refs}{mark}"
        stack += [(c, level + 1) for c in reversed(children.get(e["id"], []))]


def run_lineage(args: argparse.Namespace) -> int:
    target = call(args, "GET", f"/v1/executions/{_path(args.id)}")
    reply = call(args, "GET", f"/v1/executions/{_path(args.id)}/lineage")
    if args.json:
        _print_json({"execution": target, **reply})
        return 0
    views = [*reply["ancestors"], target, *reply["descendants"]]
    for line in _tree([v["execution"] for v in views], args.id):
        print(line)
    return 0
