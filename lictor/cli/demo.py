"""`lictor demo`: a runtime governance scenario against a real local control plane.

    lictor demo [--once] [--port P]

Starts `lictor serve` on a temporary SQLite data directory (on loopback, a
free port unless ``--port``), sets it up as an admin would and plays the
scenario of `lictor.demo.scenario`: three runtimes in three regions, agents
spawning sub-agents, real subprocess work through `lictor run` and the SDK.
Prints a table of each step, the promise it shows and whether it held.

With ``--once`` it then exits: 0 only if every promise held and the log
audit passed, 1 otherwise. Without, it prints where to look (API, log,
admin credential) and keeps the control plane running until Ctrl-C (or
SIGTERM). Either way it then stops the server and deletes the temporary
directory.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from lictor.demo import scenario
from lictor.demo.plane import ControlPlane
from lictor.demo.stage import Row

FAILED = 1
DETAIL_WIDTH = 100


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="play a governance scenario on a temporary control plane",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    p.add_argument("--once", action="store_true", help="exit after the scenario and the audit")
    p.add_argument("--port", type=int, default=0, help="listen port (default: any free one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lictor-demo-") as temp:
        root = Path(temp)
        plane = ControlPlane.start(root, args.port)
        try:
            print(f"lictor demo: control plane at {plane.url}, data in {plane.data_dir}")
            rows = scenario.play(plane, root, progress=_progress)
            print(table(rows), flush=True)
            code = 0 if scenario.held(rows) else FAILED
            if not args.once:
                _show_where(plane)
                _serve_until_interrupted(plane)
            return code
        finally:
            plane.stop()


def _progress(text: str) -> None:
    print(text, flush=True)


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
    print(f"\nconsole: not built yet ({plane.url}/console); the API is at {plane.url}/v1")
    print(f"log:     {plane.url}/log/checkpoint   verifier key: {plane.url}/v1/log/key")
    print(f"admin credential: {plane.token}")
    print(f"try:     export LICTOR_URL={plane.url} LICTOR_CREDENTIAL={plane.token}")
    print(
        "         lictor exec list; lictor runtime list; lictor log audit $LICTOR_URL/log --key …"
    )
    print("Serving until Ctrl-C; the temporary data directory is deleted then.", flush=True)


def _serve_until_interrupted(plane: ControlPlane) -> None:
    """Wait for Ctrl-C or SIGTERM (either leaves the caller to clean up)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
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
