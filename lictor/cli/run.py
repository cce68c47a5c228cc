"""`lictor run`: run any command as a governed execution, and stop it when trust ends.

    lictor run [--url U] [--principal P] --action A --resource R [--context JSON]
               [--ttl S] [--grace S] [--user NAME] -- CMD ARGS...

The runtime's credential comes from ``--credential-file`` or
``LICTOR_CREDENTIAL`` (see `lictor.cli.client`). The command starts only if
the execution is allowed. It runs in its own process group, and in its own
cgroup where the machine allows it (`lictor.supervise`), with
``LICTOR_EXECUTION_ID``, ``LICTOR_GRANT``, ``LICTOR_URL`` and a W3C
``TRACEPARENT`` in its environment and no other ``LICTOR_*`` variable: never
the credential. A `lictor run` or SDK call inside it finds no credential and
acts through the grant, so it can only start children of this execution
(whose principal defaults to this one's), and nothing once the lease is over.
This process is made non-dumpable, so a command running as the same user
cannot read the credential out of ``/proc/<pid>/environ`` or its memory;
``--user`` (as root) runs the command as another user, who cannot read a
credential file kept 0600 either.

While it runs, the lease is renewed and the execution's events followed
(`lictor.sdk`). SIGINT and SIGTERM are forwarded to the command. On
revocation, or a lease that could not be renewed in time, the whole command
gets SIGTERM, then SIGKILL after ``--grace`` seconds, and never later than
the local deadline, which comes before the lease ends: a command that ignores
SIGTERM is still dead before its lease is over. (A lease that cannot be
renewed is given up ``--grace`` seconds before the deadline, at most a
quarter of the lease, so the SIGTERM comes with that much notice.) The
reason goes to stderr. If `lictor run` itself is killed, its watchdog kills
the command. The execution is completed with the command's exit code.

Exit codes: the command's own; otherwise `DENIED` (77), `UNREACHABLE` (69:
no decision could be had at start), `REVOKED` (86), `LEASE_LOST` (87), 127
for a command that cannot be started, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Mapping
from types import FrameType

from lictor.cli.client import DEFAULT_URL, credential, explicit_credential
from lictor.errors import (
    DeniedError,
    ExecutionRevokedError,
    InvalidRequestError,
    LeaseLostError,
)
from lictor.supervise import Pending, Supervised, Watchdog, cgroup_home, not_dumpable

TYPE_CHECKING = False  # `typing` costs this command 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

    from lictor.sdk import ExecutionHandle

GRANT_ENV = "LICTOR_GRANT"  # as `lictor.sdk.scope` reads it (the SDK loads later)

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
    p.add_argument("--user", help="run the command as this user (lictor run must be root)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise InvalidRequestError("say which command to run, after --")
    principal = args.principal or parent_principal()
    action = args.action if "::" in args.action else f'Action::"{args.action}"'
    secret = runtime_credential(args)
    url = args.url or os.environ.get("LICTOR_URL") or DEFAULT_URL
    if args.grace < 0:
        raise InvalidRequestError("--grace must not be negative")
    not_dumpable()  # before the watchdog forks: it holds the same memory
    watchdog = Watchdog()  # forked first: no thread may exist yet
    # held at its gate, the command's shell joins its cgroup (which can take the kernel
    # 10 ms or more) while the SDK loads and the decision is made (`lictor.supervise`)
    command = Supervised.prepare(argv, environment(url), cgroup_home(), args.user)
    if command.held is not None:  # killed while it waits, this process leaves no cgroup
        watchdog.guard_group(*command.held)
    try:
        return _govern(url, secret, principal, action, args, command, watchdog)
    finally:
        command.cancel()  # denied, or no decision: it never starts
        watchdog.release()
        # Python puts default handlers back while it exits: a parent stopping its whole
        # tree would then kill this process, and its exit code would be lost. Ignored
        # signals stay ignored through interpreter shutdown.
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)


def runtime_credential(args: argparse.Namespace) -> str | None:
    """The runtime's credential; None inside a governed command, which acts through
    its grant (``LICTOR_GRANT``) unless a credential is given explicitly."""
    if explicit_credential(args) or not os.environ.get(GRANT_ENV):
        secret = credential(args)
        if not secret:
            raise InvalidRequestError("a runtime credential is needed (LICTOR_CREDENTIAL)")
        return secret
    return None


def _govern(
    url: str,
    secret: str | None,
    principal: str,
    action: str,
    args: argparse.Namespace,
    command: Pending,
    watchdog: Watchdog,
) -> int:
    from lictor.sdk import Client  # here: its imports overlap the cgroup's join

    context = _context(args.context)
    with Client(url, secret) as client:
        try:
            scope = client.execution(
                principal, action, args.resource, context, args.ttl, stop_ahead=args.grace
            )
            with scope as handle:
                return _supervise(handle, command, args, watchdog)
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


def _supervise(
    handle: ExecutionHandle,
    command: Pending,
    args: argparse.Namespace,
    watchdog: Watchdog,
) -> int:
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
        supervised = command.open(execution_variables(handle, os.environ))
    except OSError as e:
        print(f"lictor run: cannot start {command.argv[0]}: {e}", file=sys.stderr)
        handle.report("failed", NOT_STARTED, f"not started: {e}")
        return NOT_STARTED
    started.append(supervised)
    watchdog.guard(supervised)
    handle.on_cancel(lambda: supervised.terminate(_grace(handle, args.grace)))
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


def _grace(handle: ExecutionHandle, grace: float) -> float:
    """SIGTERM to SIGKILL: ``grace``, cut short so the command is dead by the deadline."""
    return max(0.0, min(grace, handle.stop_by - time.monotonic()))


def environment(url: str) -> dict[str, str]:
    """The command's environment before its execution is known: this one's, less every
    ``LICTOR_*`` variable (a credential among them), plus the control plane's URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICTOR_")}
    env["LICTOR_URL"] = url
    return env


def execution_variables(handle: ExecutionHandle, env: Mapping[str, str]) -> dict[str, str]:
    """What identifies the command's execution, added to `environment` as it starts:
    its id, its grant and a W3C ``TRACEPARENT`` (in the trace of ``env``'s, if any)."""
    return {
        "LICTOR_EXECUTION_ID": handle.id,
        GRANT_ENV: handle.grant or "",
        "TRACEPARENT": traceparent(str(handle.execution["root_id"]), handle.id, env),
    }


def traceparent(root_id: str, execution_id: str, env: Mapping[str, str]) -> str:
    """A W3C ``traceparent``: the caller's trace if it has one, else one per root. Ids
    are read from execution ids (not hashed: `hashlib` would cost this command 3 ms
    before its command starts): the trace id is the root id's low 128 bits, the span
    id this execution id's low 64, the id's 26 characters read as base-36 digits."""
    trace = f"{_bits(root_id, 128):032x}"
    incoming = env.get("TRACEPARENT", "").split("-")
    if len(incoming) == 4 and len(incoming[1]) == 32 and incoming[1] != "0" * 32:
        trace = incoming[1].lower()
    return f"00-{trace}-{_bits(execution_id, 64):016x}-01"


def _bits(execution_id: str, width: int) -> int:
    """The low ``width`` bits of ``execution_id`` as a number (never 0, which W3C
    trace context forbids)."""
    digits = execution_id.removeprefix("ex_")
    try:
        number = int(digits, 36)
    except ValueError:  # not an id as the control plane spells them: its bytes
        number = int.from_bytes(digits.encode(), "big")
    return number % (1 << width) or 1


def _context(text: str) -> dict[str, Any]:
    import json  # loaded by the SDK already: not before the command's shell is started

    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidRequestError(f"--context is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("--context must be a JSON object")
    return value


def parent_principal() -> str:
    """The principal of the enclosing execution's grant (its ``sub``), if there is one."""
    import base64
    import json

    grant = os.environ.get(GRANT_ENV, "")
    try:
        payload = grant.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise InvalidRequestError(
            "say who acts: --principal (no parent grant to take it from)"
        ) from None
