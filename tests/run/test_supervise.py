"""A command held at its gate (`lictor.supervise.Pending`): in its cgroup before it runs,
started only by `open` with the variables given, never by anything else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lictor.supervise import Pending, Supervised, cgroup_home

RECORD = 'echo "$LICTOR_EXECUTION_ID|$TRACEPARENT|$KEPT" > "$OUT"; cat /proc/self/cgroup >> "$OUT"'


@pytest.fixture(params=["cgroup", "no cgroup"])
def home(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Where the command's cgroup goes: this machine's, when it has one, and none."""
    found = cgroup_home()
    if request.param == "cgroup" and found is None:
        pytest.skip("no writable cgroup v2 hierarchy here: the other case covers it")
    yield found if request.param == "cgroup" else None


def held(tmp_path: Path, home: str | None) -> tuple[Pending, Path]:
    out = tmp_path / "out"
    env = {"PATH": os.environ["PATH"], "OUT": str(out), "KEPT": "kept", "TRACEPARENT": "old"}
    return Supervised.prepare(["sh", "-c", RECORD], env, home), out


def cgroups(home: str | None) -> set[str]:
    """This process's commands' cgroups that are still there."""
    if home is None:
        return set()
    return {name for name in os.listdir(home) if name.startswith(f"lictor-run-{os.getpid()}-")}


HOLD_AND_OPEN = """
import os, sys, time
from lictor.supervise import Supervised
home = sys.argv[1] if sys.argv[1] != "-" else None
env = {"PATH": os.environ["PATH"], "OUT": sys.argv[2], "KEPT": "kept", "TRACEPARENT": "old"}
command = Supervised.prepare(["sh", "-c", sys.argv[3]], env, home)
time.sleep(0.2)
mine = f"lictor-run-{os.getpid()}-"
waiting = sorted(n for n in os.listdir(home) if n.startswith(mine)) if home else []
procs = [open(os.path.join(home, n, "cgroup.procs")).read().split() for n in waiting]
refused = 0
for bad in ({"LICTOR_GRANT": "a\\ngo"}, {"NOT-A-NAME": "x"}) if home else ():
    try:
        command.open(bad)  # a line break or a bad name must never reach the gate
    except ValueError:
        refused += 1
print(os.path.exists(sys.argv[2]), len(waiting), all(procs), refused)
supervised = command.open({"LICTOR_EXECUTION_ID": "ex_1", "TRACEPARENT": sys.argv[4]})
print(supervised.wait(), os.path.basename(supervised.cgroup or "-"))
supervised.clean_up()
"""


def test_a_held_command_runs_at_open_with_the_variables_given(
    tmp_path: Path, home: str | None
) -> None:
    """In a process of its own, as `lictor run` holds it: few descriptors open, so its
    gate's is one a POSIX shell can read (0 to 9)."""
    out, traceparent = tmp_path / "out", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    argv = [sys.executable, "-c", HOLD_AND_OPEN, home or "-", str(out), RECORD, traceparent]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, close_fds=True)
    assert done.returncode == 0, done.stderr
    before_open, after = done.stdout.splitlines()
    ran_early, waiting, joined, refused = before_open.split()
    assert ran_early == "False"  # held: nothing ran before `open`
    if home is not None:  # but its shell was in its cgroup already
        assert (waiting, joined, refused) == ("1", "True", "2")
    code, cgroup = after.split()
    assert code == "0"
    first, *groups = out.read_text().splitlines()
    assert first == f"ex_1|{traceparent}|kept"
    if home is not None:  # it ran in that cgroup, which is gone now
        assert next(line for line in groups if line.startswith("0::")).endswith("/" + cgroup)
    assert not os.path.exists(os.path.join(home or "-", cgroup))


def test_a_cancelled_command_never_runs_and_leaves_no_cgroup(
    tmp_path: Path, home: str | None
) -> None:
    before = cgroups(home)
    command, out = held(tmp_path, home)
    command.cancel()
    time.sleep(0.2)
    assert not out.exists()
    assert cgroups(home) == before


def test_a_command_that_cannot_start_is_reported_as_not_started(
    tmp_path: Path, home: str | None
) -> None:
    command = Supervised.prepare(["/nonexistent/tool"], {"PATH": os.environ["PATH"]}, home)
    if home is None:  # started directly: the error is raised
        with pytest.raises(FileNotFoundError):
            command.open({})
        return
    supervised = command.open({})  # its shell could not exec it: 127, as a shell says
    assert supervised.wait() == 127
    supervised.clean_up()


SPAWN_WITH_AN_INHERITED_FD = """
import os, sys
from lictor.supervise import Process
# as a descriptor handed down by whoever started us (high: the child's listing has its own)
leaked = os.dup2(os.open(os.devnull, os.O_RDONLY), 50, inheritable=True)
kept_read, kept_write = os.pipe()
probe = 'ls /proc/$$/fd | tr "\\\\n" " "; echo; grep SigIgn /proc/$$/status'
child = Process.spawn(["sh", "-c", probe], dict(os.environ), keep=kept_read)
print(child.wait(), leaked, kept_read, os.get_inheritable(kept_read))
"""
SIGPIPE_BIT = 1 << (13 - 1)  # in /proc's SigIgn mask


def test_a_spawned_command_inherits_no_descriptor_and_no_ignored_sigpipe() -> None:
    """As `subprocess` would start it: standard input, output and error (and the gate,
    where asked) but no descriptor this process was handed, and SIGPIPE as a program
    expects it (Python ignores it)."""
    argv = [sys.executable, "-c", SPAWN_WITH_AN_INHERITED_FD]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, close_fds=True)
    assert done.returncode == 0, done.stderr
    listed, ignored, ours = done.stdout.splitlines()
    fds = {int(fd) for fd in listed.split()}
    code, leaked, kept, still_inheritable = ours.split()
    assert code == "0"
    assert int(leaked) not in fds
    assert int(kept) in fds  # the gate's descriptor, at its own number
    assert still_inheritable == "False"  # only for the spawn
    assert not int(ignored.split()[1], 16) & SIGPIPE_BIT


def test_poll_and_wait_from_two_threads_reap_once() -> None:
    import threading

    from lictor.supervise import Process

    child = Process.spawn(["sh", "-c", "sleep 0.2; exit 3"], {"PATH": os.environ["PATH"]})
    assert child.poll() is None
    polled: list[int | None] = []
    poller = threading.Thread(
        target=lambda: [polled.append(child.poll()) or time.sleep(0.01) for _ in range(60)]
    )
    poller.start()
    assert child.wait() == 3
    poller.join()
    assert polled[-1] == 3 and child.poll() == 3 and child.wait() == 3


def test_wait_with_a_timeout_gives_up_on_a_running_process() -> None:
    from lictor.supervise import Process

    child = Process.spawn(["sleep", "30"], {"PATH": os.environ["PATH"]})
    with pytest.raises(TimeoutError):
        child.wait(timeout=0.1)
    os.kill(child.pid, 9)
    assert child.wait(timeout=10) == -9


def test_a_child_the_system_reaped_counts_as_ended() -> None:
    """Started with SIGCHLD ignored (inherited from whoever started it), a process's
    children are reaped by the kernel: waiting for one ends, as with `subprocess`."""
    probe = (
        "import os, signal\n"
        "from lictor.supervise import Process\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        "child = Process.spawn(['sh', '-c', 'exit 3'], dict(os.environ))\n"
        "print(child.wait(), child.poll())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]
