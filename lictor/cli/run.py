"""`lictor run`: run any command as a governed execution, and stop it when trust ends.

    lictor run [--url U] [--principal P] --action A --resource R [--context JSON]
               [--ttl S] [--grace S] -- CMD ARGS...

The runtime's credential comes from ``--credential-file`` or
``LICTOR_CREDENTIAL`` (see `lictor.cli.client`). The command starts only if
the execution is allowed. It runs in its own process group, and in its own
cgroup where the machine allows it (`lictor.supervise`), with
``LICTOR_EXECUTION_ID``, ``LICTOR_GRANT`` and a W3C ``TRACEPARENT`` in its
environment, so a `lictor run` or SDK call inside it becomes a child
execution (whose principal defaults to this one's).

While it runs, the lease is renewed and the execution's events followed
(`lictor.sdk`). SIGINT and SIGTERM are forwarded to the command. On
revocation, or a lease that could not be renewed before the local deadline,
the whole command gets SIGTERM, then SIGKILL after ``--grace`` seconds; the
reason goes to stderr. If `lictor run` itself is killed, its watchdog kills
the command. The execution is completed with the command's exit code.

Exit codes: the command's own; otherwise `DENIED` (77), `UNREACHABLE` (69:
no decision could be had at start), `REVOKED` (86), `LEASE_LOST` (87), 127
for a command that cannot be started, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from lictor.cli.client import DEFAULT_URL, credential
from lictor.errors import (
    DeniedError,
    ExecutionRevokedError,
    InvalidRequestError,
    LeaseLostError,
)
from lictor.sdk import Client, ExecutionHandle
from lictor.sdk.scope import GRANT_ENV
from lictor.supervise import Supervised, Watchdog, cgroup_home

DENIED = 77
UNREACHABLE = 69
REVOKED = 86
LEASE_LOST = 87
NOT_STARTED = 127
DEFAULT_GRACE_S = 3.0
FORWARDED = (signal.SIGINT, signal.SIGTERM)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run a command as a governed execution",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog=f"exit codes: the command's; {DENIED} denied, {UNREACHABLE} no decision at start,"
        f" {REVOKED} revoked, {LEASE_LOST} lease lost, {NOT_STARTED} command not started",
    )
    p.add_argument("--url", help=f"control plane URL (env LICTOR_URL, default {DEFAULT_URL})")
    p.add_argument("--credential-file", help="file holding the runtime's credential")
    p.add_argument("--principal", help='who acts, e.g. Agent::"planner-7" (default: the parent\'s)')
    p.add_argument("--action", required=True, help='Action::"deploy", or just deploy')
    p.add_argument("--resource", required=True, help='e.g. Service::"payments-api"')
    p.add_argument("--context", default="{}", help="request context, a JSON object")
    p.add_argument("--ttl", type=int, help="lease in seconds (default: the server's)")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, help="SIGTERM to SIGKILL, s")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise InvalidRequestError("say which command to run, after --")
    context = _context(args.context)
    principal = args.principal or parent_principal()
    action = args.action if "::" in args.action else f'Action::"{args.action}"'
    secret = credential(args)
    if not secret:
        raise InvalidRequestError("a runtime credential is needed (LICTOR_CREDENTIAL)")
    url = args.url or os.environ.get("LICTOR_URL") or DEFAULT_URL
    watchdog = Watchdog()  # forked first: no thread may exist yet
    try:
        return _govern(url, secret, principal, action, args, context, argv, watchdog)
    finally:
        watchdog.release()
        # Python puts default handlers back while it exits: a parent stopping its whole
        # tree would then kill this process, and its exit code would be lost. Ignored
        # signals stay ignored through interpreter shutdown.
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)


def _govern(
    url: str,
    secret: str,
    principal: str,
    action: str,
    args: argparse.Namespace,
    context: dict[str, Any],
    argv: list[str],
    watchdog: Watchdog,
) -> int:
    with Client(url, secret) as client:
        try:
            scope = client.execution(principal, action, args.resource, context, args.ttl)
            with scope as handle:
                return _supervise(handle, argv, args.grace, watchdog)
        except DeniedError as e:
            if e.receipt is None:
                print(f"lictor run: no decision: {e.reason_code}: {e.message}", file=sys.stderr)
                return UNREACHABLE
            where = f"log index {e.receipt.get('index')}"
            print(f"lictor run: denied: {e.reason_code}: {e.message} ({where})", file=sys.stderr)
            return DENIED
        except ExecutionRevokedError as e:
            print(f"lictor run: revoked: {e.message}", file=sys.stderr)
            return REVOKED
        except LeaseLostError as e:
            print(f"lictor run: lease lost: {e.message}", file=sys.stderr)
            return LEASE_LOST


def _supervise(handle: ExecutionHandle, argv: list[str], grace: float, watchdog: Watchdog) -> int:
    """Run the command under ``handle``; its exit code (the scope raises if it was lost).

    SIGINT and SIGTERM are caught from before the command starts until this
    process exits: one that arrives early is passed on as soon as the command
    exists, and a late one (a parent stopping its whole tree) cannot kill
    this process before it has reported.
    """
    started: list[Supervised] = []
    interrupted: list[int] = []
    _forward_signals(started, interrupted)
    try:
        supervised = Supervised.start(argv, _environment(handle), cgroup_home())
    except OSError as e:
        print(f"lictor run: cannot start {argv[0]}: {e}", file=sys.stderr)
        handle.report("failed", NOT_STARTED, f"not started: {e}")
        return NOT_STARTED
    started.append(supervised)
    watchdog.guard(supervised)
    handle.on_cancel(lambda: supervised.terminate(grace))
    if interrupted:
        supervised.signal(interrupted[0])
    try:
        code = supervised.wait()
    finally:
        supervised.clean_up()
    exit_code = code if code >= 0 else 128 - code
    if handle.lost is None:
        outcome = "succeeded" if code == 0 else "cancelled" if interrupted else "failed"
        handle.report(outcome, exit_code)
    return exit_code


def _forward_signals(started: list[Supervised], seen: list[int]) -> None:
    def forward(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)
        for supervised in started:
            supervised.signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)


def _environment(handle: ExecutionHandle) -> dict[str, str]:
    env = dict(os.environ)
    env["LICTOR_EXECUTION_ID"] = handle.id
    env[GRANT_ENV] = handle.grant or ""
    env["TRACEPARENT"] = traceparent(str(handle.execution["root_id"]), handle.id, env)
    return env


def traceparent(root_id: str, execution_id: str, env: Mapping[str, str]) -> str:
    """A W3C ``traceparent``: the caller's trace if it has one, else one per root."""
    trace = hashlib.sha256(root_id.encode()).hexdigest()[:32]
    incoming = env.get("TRACEPARENT", "").split("-")
    if len(incoming) == 4 and len(incoming[1]) == 32 and incoming[1] != "0" * 32:
        trace = incoming[1].lower()
    span = hashlib.sha256(execution_id.encode()).hexdigest()[:16]
    return f"00-{trace}-{span}-01"


def _context(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidRequestError(f"--context is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("--context must be a JSON object")
    return value


def parent_principal() -> str:
    """The principal of the enclosing execution's grant (its ``sub``), if there is one."""
    grant = os.environ.get(GRANT_ENV, "")
    try:
        payload = grant.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise InvalidRequestError(
            "say who acts: --principal (no parent grant to take it from)"
        ) from None
