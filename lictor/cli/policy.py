"""`lictor policy`: check a policy directory, push, list, show, diff and activate versions.

    lictor policy validate DIR [--json]          local only: no server, no credential
    lictor policy push DIR [--json]
    lictor policy list [--json]
    lictor policy show VERSION [--json]
    lictor policy diff A B [--json]              A, B: a version or a policy directory
    lictor policy activate VERSION [--json]

`validate` and `push` print every issue as ``file:line:column: message``
(`PolicyIssue`); either exits 1 if there is one, and `push` then sends nothing.
A VERSION may be shortened to any prefix that names one stored version. `diff`
prints a unified diff per file that differs (``identical`` when none does) and
exits 0 either way. The server does the work; this module reads directories,
calls the API (`lictor.cli.client`) and prints.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lictor.cli.client import add_client_options, call
from lictor.core.policy import PolicyIssue, PolicySource, compile_policies, validate
from lictor.errors import InvalidRequestError, NotFoundError
from lictor.policydir import load_policy_dir
from lictor.service.policies import source_json

VERSION_LENGTH = 64  # hex SHA-256
Files = dict[str, str]
Command = Callable[[argparse.Namespace], int]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("policy", help="check, push, compare and activate policy versions")
    cmds = parser.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    local = _command(cmds, "validate", "check a policy directory (locally)", run_validate, "DIR")
    local.add_argument("--json", action="store_true", help="print JSON")
    add_client_options(_command(cmds, "push", "validate and store a directory", run_push, "DIR"))
    add_client_options(_command(cmds, "list", "list versions; * marks the active one", run_list))
    add_client_options(_command(cmds, "show", "print a version's files", run_show, "VERSION"))
    diff = _command(cmds, "diff", "unified diff of two versions or directories", run_diff)
    diff.add_argument("a", metavar="A", help="a version or a policy directory")
    diff.add_argument("b", metavar="B", help="a version or a policy directory")
    add_client_options(diff)
    add_client_options(_command(cmds, "activate", "make a version active", run_activate, "VERSION"))
    backtest = _command(
        cmds,
        "backtest",
        "recorded decisions a candidate directory would change",
        run_backtest,
        "DIR",
    )
    backtest.add_argument("--since", help="only decisions at or after this time (ISO 8601)")
    add_client_options(backtest)


def _command(
    cmds: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Command,
    *positionals: str,
) -> argparse.ArgumentParser:
    p = cmds.add_parser(name, help=help_text)
    for metavar in positionals:
        p.add_argument(metavar.lower(), metavar=metavar)
    p.set_defaults(func=func)
    return p


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _time(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


# validate and push


def _validation(source: PolicySource, issues: list[PolicyIssue]) -> dict[str, Any]:
    count = None if issues else len(compile_policies(source).policies)
    return {
        "ok": not issues,
        "version": source.version,
        "policies": count,
        "issues": [i.to_json() for i in issues],
    }


def _load(directory: str) -> tuple[PolicySource, list[PolicyIssue]]:
    source = load_policy_dir(directory)
    return source, list(validate(source))


def _report(args: argparse.Namespace, source: PolicySource, issues: list[PolicyIssue]) -> None:
    """Print the validation outcome: JSON, or one line per issue (an OK line if none)."""
    report = _validation(source, issues)
    if args.json:
        _print_json(report)
    elif issues:
        print("\n".join(str(i) for i in issues))
    else:
        print(f"OK: {report['policies']} policies, version {source.version}")


def run_validate(args: argparse.Namespace) -> int:
    source, issues = _load(args.dir)
    _report(args, source, issues)
    return 1 if issues else 0


def run_push(args: argparse.Namespace) -> int:
    source, issues = _load(args.dir)
    if issues:
        _report(args, source, issues)
        raise InvalidRequestError(f"{args.dir}: {len(issues)} issue(s); nothing pushed")
    reply = call(args, "POST", "/v1/policies", {"source": source_json(source)})
    if args.json:
        _print_json(reply)
    else:
        stored = "new" if reply["new"] else "already stored"
        print(f"pushed {reply['version']} ({stored})")
    return 0


# reading versions


def _resolve(args: argparse.Namespace, version: str) -> str:
    """The full version named by ``version`` (a unique prefix will do), safe in a URL path."""
    if len(version) >= VERSION_LENGTH:
        return quote(version, safe="")
    versions = call(args, "GET", "/v1/policies")["versions"]
    matches = [v["version"] for v in versions if v["version"].startswith(version.lower())]
    if not version or not matches:
        raise NotFoundError(f"no policy version {version!r}")
    if len(matches) > 1:
        raise InvalidRequestError(f"{version!r} names {len(matches)} versions; give more of it")
    full: str = matches[0]
    return full


def _fetch(args: argparse.Namespace, version: str) -> dict[str, Any]:
    reply: dict[str, Any] = call(args, "GET", f"/v1/policies/{_resolve(args, version)}")
    return reply


def _files(source: dict[str, Any]) -> Files:
    """Every file of a source in its JSON form, policies first (sorted), then the schema."""
    files = dict(sorted(source["policies"].items()))
    files[source["schema"]["name"]] = source["schema"]["text"]
    return files


def run_list(args: argparse.Namespace) -> int:
    reply = call(args, "GET", "/v1/policies")
    if args.json:
        _print_json(reply)
        return 0
    for v in reply["versions"]:
        mark = "*" if v["version"] == reply["active"] else " "
        print(f"{mark} {v['version']}  {_time(v['pushed_at_ms'])}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    reply = _fetch(args, args.version)
    if args.json:
        _print_json(reply)
        return 0
    print(f"version {reply['version']}")
    print(f"pushed  {_time(reply['pushed_at_ms'])}")
    for name, text in _files(reply["source"]).items():
        print(f"\n==> {name} <==")
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


# diff


def _side(args: argparse.Namespace, ref: str) -> tuple[str, Files]:
    """A label and the files of ``ref``: a policy directory if one exists there, else a version."""
    if Path(ref).is_dir():
        return ref.rstrip("/") or "/", _files(source_json(load_policy_dir(ref)))
    reply = _fetch(args, ref)
    return reply["version"][:12], _files(reply["source"])


def _lines(text: str) -> list[str]:
    *full, last = text.split("\n")
    lines = [line + "\n" for line in full]
    if last:
        lines.append(last + "\n\\ No newline at end of file\n")
    return lines


def _file_diffs(a: tuple[str, Files], b: tuple[str, Files]) -> Iterator[tuple[str, str]]:
    (label_a, files_a), (label_b, files_b) = a, b
    for name in sorted(files_a.keys() | files_b.keys()):
        old, new = files_a.get(name), files_b.get(name)
        if old == new:
            continue
        diff = difflib.unified_diff(
            _lines(old or ""),
            _lines(new or ""),
            f"{label_a}/{name}" if old is not None else "/dev/null",
            f"{label_b}/{name}" if new is not None else "/dev/null",
        )
        yield name, "".join(diff)


def run_diff(args: argparse.Namespace) -> int:
    a, b = _side(args, args.a), _side(args, args.b)
    diffs = dict(_file_diffs(a, b))
    if args.json:
        _print_json({"a": a[0], "b": b[0], "identical": not diffs, "files": diffs})
    elif diffs:
        print("".join(diffs.values()), end="")
    else:
        print("identical")
    return 0


# activate


def run_activate(args: argparse.Namespace) -> int:
    version = _resolve(args, args.version)
    reply = call(args, "POST", f"/v1/policies/{version}/activate")
    if args.json:
        _print_json(reply)
        return 0
    revoked = reply["revoked"]
    print(f"activated {reply['version']} (log index {reply['log_index']})")
    print(f"revoked {len(revoked)} active execution(s)" + (":" if revoked else ""))
    for execution_id in revoked:
        print(f"  {execution_id}")
    return 0


def _since_ms(text: str | None) -> int:
    if text is None:
        return 0
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidRequestError(f"--since {text!r} is not an ISO 8601 time") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def run_backtest(args: argparse.Namespace) -> int:
    """Evaluate recorded decisions under DIR's policies; list those that would change."""
    source = load_policy_dir(args.dir)
    body = {"source": source_json(source), "since_ms": _since_ms(args.since)}
    reply = call(args, "POST", "/v1/policies/backtest", body)
    if args.json:
        _print_json(reply)
        return 0
    changed = reply["changed"]
    print(f"candidate {reply['candidate']}: {len(changed)} recorded decision(s) would change")
    for c in changed:
        before = "allow" if c["recorded"]["allowed"] else "deny"
        after = "allow" if c["replayed"]["allowed"] else "deny"
        print(f"  {c['execution']} #{c['log_index']} {_time(c['at_ms'])}: {before} -> {after}")
    if reply.get("withheld"):
        print(f"({reply['withheld']} execution(s) with sealed arguments left out: admins see them)")
    return 0
