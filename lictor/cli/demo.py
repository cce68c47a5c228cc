"""`lictor demo`: a runtime governance scenario against a real local control plane.

    lictor demo [--once] [--port P]

Starts `lictor serve` on a temporary SQLite data directory (on loopback, a
free port unless ``--port``), sets it up as an admin would and plays the
scenario of `lictor.demo.scenario`: three runtimes in three regions, agents
spawning sub-agents, real subprocess work through `lictor run` and the SDK.
Prints a table of each step, the promise it shows and whether it held.

With ``--once`` it plays the scenario itself, headless, and exits: 0 only if
every promise held and the log audit passed, 1 otherwise. Without, it first
prints the console's address and the admin credential, has the server play
the scenario (so the console's demo page shows it unfolding and can play it
again), prints the table and keeps the control plane running until Ctrl-C
(or SIGTERM). Either way it then stops the server and deletes the temporary
directory.

``--attach PORT`` plays the scenario against a server already running on
that loopback port, with the admin credential in ``LICTOR_CREDENTIAL``;
``--json`` prints each step's start and end as a JSON line. That is how the
server runs it for the console (`lictor.demo.runner`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from lictor.demo import scenario
from lictor.demo.plane import ControlPlane
from lictor.demo.stage import Row, Step
from lictor.errors import InvalidRequestError

FAILED = 1
DETAIL_WIDTH = 100
FOLLOW_SECONDS = 0.5


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="play a governance scenario on a temporary control plane",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    p.add_argument("--once", action="store_true", help="exit after the scenario and the audit")
    p.add_argument("--port", type=int, default=0, help="listen port (default: any free one)")
    p.add_argument(
        "--attach",
        type=int,
        metavar="PORT",
        help="play against the server on this loopback port (credential: LICTOR_CREDENTIAL)",
    )
    p.add_argument("--json", action="store_true", help="print each step as a JSON line")
    p.add_argument("--until-stdin-closes", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.attach is not None:
        if args.until_stdin_closes:  # the server that runs us holds the other end
            threading.Thread(target=_stop_at_end_of_input, daemon=True).start()
        return _attached(args.attach, args.json)
    with tempfile.TemporaryDirectory(prefix="lictor-demo-") as temp:
        root = Path(temp)
        plane = ControlPlane.start(root, args.port)
        try:
            print(f"lictor demo: control plane at {plane.url}, data in {plane.data_dir}")
            if args.once:
                rows = scenario.play(plane, root, progress=_progress)
            else:
                _show_where(plane)
                rows = _played_by_server(plane)
            print(table(rows), flush=True)
            code = 0 if scenario.held(rows) else FAILED
            if not args.once:
                _serve_until_interrupted(plane)
            return code
        finally:
            plane.stop()


def _stop_at_end_of_input() -> None:
    """Read standard input to its end, then stop as SIGTERM would."""
    while sys.stdin.buffer.read(4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _attached(port: int, as_json: bool) -> int:
    """Play against a running server; with ``as_json``, a JSON line per step start and end."""
    token = os.environ.get("LICTOR_CREDENTIAL", "")
    if not token:
        raise InvalidRequestError("--attach needs the admin credential in LICTOR_CREDENTIAL")
    plane = ControlPlane.attach(port, token)
    signal.signal(signal.SIGTERM, _interrupt)  # stopping still ends the governed processes

    def started(step: Step) -> None:
        _json_line({"event": "step", "name": step.name, "status": "running"})

    def played(row: Row) -> None:
        status = "ok" if row.ok else "failed"
        message = {"event": "step", "name": row.step, "status": status, "detail": row.detail}
        _json_line({**message, "cited": [c.index for c in row.cited]})

    with tempfile.TemporaryDirectory(prefix="lictor-demo-") as temp:
        if as_json:
            rows = scenario.play(plane, Path(temp), progress=started, played=played)
        else:
            rows = scenario.play(plane, Path(temp), progress=_progress)
    held = scenario.held(rows)
    if as_json:
        _json_line({"event": "done", "held": held})
    else:
        print(table(rows), flush=True)
    return 0 if held else FAILED


def _json_line(message: dict[str, object]) -> None:
    print(json.dumps(message), flush=True)


def _played_by_server(plane: ControlPlane) -> list[Row]:
    """Have the server play the scenario (the console shows it) and follow it to the end."""
    status = plane.admin("POST", "/v1/demo/start")
    told: set[tuple[str, str]] = set()
    while True:
        for step in status["steps"]:
            if step["status"] != "pending" and (step["name"], step["status"]) not in told:
                told.add((step["name"], step["status"]))
                print(f"  {step['name']}: {step['status']}", flush=True)
        if status["state"] != "running":
            break
        time.sleep(FOLLOW_SECONDS)
        status = plane.admin("GET", "/v1/demo")
    return [Row(s["name"], s["promise"], s["status"] == "ok", s["detail"]) for s in status["steps"]]


def _progress(step: Step) -> None:
    print(f"  {step.name} ...", flush=True)


def table(rows: Sequence[Row]) -> str:
    """The rows as a table: step, result, promise, then the detail indented under them."""
    step_width = max(len(row.step) for row in rows)
    lines = [f"{'step':<{step_width}}  result  promise"]
    indent = " " * (step_width + 2)
    for row in rows:
        result = "ok" if row.ok else "FAILED"
        lines.append(f"{row.step:<{step_width}}  {result:<6}  {row.promise}")
        lines += textwrap.wrap(
            row.detail,
            DETAIL_WIDTH,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )
    held = sum(row.ok for row in rows)
    verdict = "all promises held" if held == len(rows) else f"{len(rows) - held} FAILED"
    lines.append(f"{held}/{len(rows)} ok: {verdict}")
    return "\n".join(lines)


def _show_where(plane: ControlPlane) -> None:
    print(f"\nconsole: {plane.url}/console/   (the demo page: {plane.url}/console/demo)")
    print(f"API:     {plane.url}/v1")
    print(f"log:     {plane.url}/log/checkpoint   verifier key: {plane.url}/v1/log/key")
    print(f"admin credential: {plane.token}")
    print(f"try:     export LICTOR_URL={plane.url} LICTOR_CREDENTIAL={plane.token}")
    print(
        "         lictor exec list; lictor runtime list; lictor log audit $LICTOR_URL/log --key …"
    )
    print("Playing the scenario now; then serving until Ctrl-C, when the temporary data")
    print("directory is deleted.\n", flush=True)


def _serve_until_interrupted(plane: ControlPlane) -> None:
    """Wait for Ctrl-C or SIGTERM (either leaves the caller to clean up)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    print("Serving until Ctrl-C (the console's demo page can play the scenario again).", flush=True)
    assert plane.process is not None
    try:
        while plane.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"lictor demo: the control plane exited ({plane.process.returncode})", flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
