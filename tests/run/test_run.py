"""`lictor run`: start only when allowed, pass the execution on, stop the whole tree."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable

from lictor.cli.run import DENIED, REVOKED, UNREACHABLE, traceparent
from lictor.supervise import cgroup_home

from ..conftest import free_port
from ..sdk.conftest import Plane
from .conftest import PRODUCTION, Run, wait_dead


def test_an_allowed_command_runs_with_its_execution_and_reports_its_exit_code(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    script = 'echo "$LICTOR_EXECUTION_ID $TRACEPARENT ${LICTOR_GRANT:+grant}"; exit 3'
    code, out, err = start_run(plane, "sh", "-c", script).finish()
    assert code == 3, err
    execution_id, traceparent, grant = out.split()
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", traceparent) and grant == "grant"
    execution = plane.execution(execution_id)["execution"]
    assert (execution["state"], execution["outcome"], execution["exit_code"]) == (
        "completed",
        "failed",
        3,
    )


def test_a_denied_command_never_starts(plane: Plane, start_run: Callable[..., Run]) -> None:
    home = cgroup_home()
    before = set(os.listdir(home)) if home else set()
    run = start_run(plane, "sh", "-c", 'echo > "$PIDS/ran"', resource=PRODUCTION)
    code, _, err = run.finish()
    assert code == DENIED and "denied" in err and "log index" in err, err
    assert not (run.pids_dir / "ran").exists()
    if home:  # the shell held in its cgroup while the decision was made is gone with it
        assert set(os.listdir(home)) <= before


def test_no_control_plane_at_start_is_its_own_exit_code(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    run = start_run(plane, "sh", "-c", 'echo > "$PIDS/ran"', url=f"http://127.0.0.1:{free_port()}")
    code, _, err = run.finish()
    assert code == UNREACHABLE and "no decision" in err, err
    assert not (run.pids_dir / "ran").exists()


def test_connected_revocation_terminates_the_whole_tree_within_a_second(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    run = start_run(plane)
    pids = run.pids(3)
    execution_id = _execution_of(plane, run)
    plane.revoke(execution_id)
    returned = time.monotonic()
    assert wait_dead(pids, timeout=1.0) == [], "the tree outlived the revocation by 1 s"
    assert time.monotonic() - returned <= 1.0
    code, _, err = run.finish()
    assert code == REVOKED and "revoked" in err, err


def _execution_of(plane: Plane, run: Run) -> str:
    """The execution id of a `lictor run` whose command is running (the only active one)."""
    leader = min(run.pids(1))
    with open(f"/proc/{leader}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    return env[b"LICTOR_EXECUTION_ID"].decode()


def test_sigterm_to_lictor_run_is_forwarded_and_the_execution_cancelled(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    script = 'trap \'echo > "$PIDS/term"; exit 143\' TERM; echo > "$PIDS/$$"; sleep 600 & wait'
    run = start_run(plane, "sh", "-c", script)
    run.pids(1)
    execution_id = _execution_of(plane, run)
    run.process.send_signal(signal.SIGTERM)
    code, _, err = run.finish()
    assert code == 143, err
    assert (run.pids_dir / "term").exists(), "the command never saw the SIGTERM"
    execution = plane.execution(execution_id)["execution"]
    assert (execution["state"], execution["outcome"], execution["exit_code"]) == (
        "completed",
        "cancelled",
        143,
    )


def test_sigterm_while_lictor_run_exits_never_kills_it(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    """A parent stopping its whole tree signals a `lictor run` that may be exiting
    already; it must still exit with a code (its own or the command's), not by SIGTERM."""
    run = start_run(plane, "sh", "-c", 'echo > "$PIDS/$$"')
    run.pids(1)  # the command ran and is ending: lictor run reports and exits next
    while run.process.poll() is None:
        run.process.send_signal(signal.SIGTERM)
        time.sleep(0.0005)
    code, _, err = run.finish()
    assert code >= 0, f"lictor run was killed by signal {-code}: {err}"


def test_a_traceparent_is_one_trace_per_root_and_one_span_per_execution() -> None:
    root, child = "ex_01m959z3pabsn5s13t3dm2h4ge", "ex_01m959z3pabsn5s13t3dm2h4gf"
    shape = r"00-[0-9a-f]{32}-[0-9a-f]{16}-01"
    mine = traceparent(root, root, {})
    assert re.fullmatch(shape, mine) and mine == traceparent(root, root, {})
    theirs = traceparent(root, child, {"TRACEPARENT": mine})  # a child run: the same trace
    assert theirs.split("-")[1] == mine.split("-")[1] and theirs != mine
    other = traceparent(child, child, {})
    assert other.split("-")[1] != mine.split("-")[1]  # another root, another trace
    zeros = "00-" + "0" * 32 + "-" + "1" * 16 + "-01"  # invalid: not followed
    assert traceparent(root, root, {"TRACEPARENT": zeros}) == mine
    assert re.fullmatch(shape, traceparent("not an id", "?", {}))
