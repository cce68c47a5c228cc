"""Run a command so that all of it can be stopped: process group, cgroup, watchdog.

What `lictor run` needs from the operating system, and nothing about Lictor:

- The command starts in a session of its own, so it and everything it
  starts share a process group that can be signalled at once.
- Where the machine has a writable cgroup v2 hierarchy, the command also
  runs in a cgroup of its own, which it joins *before* the command is
  executed (a shell writes its own pid to ``cgroup.procs``, then ``exec``\\ s
  the command). A process that calls ``setsid()`` or double-forks leaves the
  process group but never the cgroup, so `Supervised.kill` still reaches it.
  Without a usable cgroup, such a process escapes: only the process group is
  signalled (`Supervised.cgroup` is None and `lictor run` says so).
- Joining a cgroup can take the kernel ten milliseconds or more (it waits
  for an RCU grace period). `Supervised.prepare` starts that shell early,
  held at a gate (a pipe), while the caller does something else (`lictor
  run`: its decision); `Pending.open` hands it the last variables of its
  environment and lets it ``exec`` the command at once, `Pending.cancel`
  ends it unstarted, and so does the gate closing with its supervisor.
- A `Watchdog`, forked before any thread starts, holds the read end of a
  pipe. When the supervisor dies, even by SIGKILL, the pipe closes and the
  watchdog kills the command's group and cgroup, so the work cannot outlive
  its supervisor by more than a moment.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import pwd
import signal
import threading
import time
from collections.abc import Mapping, Sequence

PR_SET_DUMPABLE = 4
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)  # as `subprocess` restores them
_JOIN_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
# $0 the cgroup, $1 the gate's descriptor: join, then read NAME=value lines from the
# gate and export them until "go", then run the command; an early EOF starts nothing
_JOIN_CGROUP_AT_GATE = """echo $$ > "$0/cgroup.procs" || exit 125
[ "$1" = 3 ] || eval "exec 3<&$1 $1<&-"
shift
while IFS= read -r line <&3; do
  if [ "$line" = go ]; then exec 3<&-; exec "$@"; fi
  export "$line"
done
exit 0"""
_names = itertools.count()


def not_dumpable() -> None:
    """Keep other processes of the same user (a command this one started) out of this
    process's memory and ``/proc/<pid>/environ``, where a credential may be (Linux's
    ``PR_SET_DUMPABLE``; children get it back when they execute a program)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to do there
        pass


def as_user(user: str) -> list[str]:
    """The ``setpriv`` prefix that runs a command as ``user``; `PermissionError` unless
    this process may change its user, `FileNotFoundError` for an unknown user."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise FileNotFoundError(f"no user {user!r}") from None
    if os.geteuid() != 0:
        raise PermissionError(f"only root may run a command as {user!r}")
    import shutil  # here: `lictor run` without --user need not load it

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is needed to run a command as a user")
    ids = [f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}"]
    return [setpriv, *ids, "--init-groups", "--"]


def cgroup_home() -> str | None:
    """This process's own cgroup v2 directory, if it can hold new cgroups; else None.

    Paths here are strings (`os.path`): `pathlib` would cost every `lictor run` about
    8 ms of imports before its command starts."""
    try:
        mounts = _read("/proc/self/mounts").splitlines()
        own = _read("/proc/self/cgroup").splitlines()
    except OSError:
        return None
    mount = next((line.split()[1] for line in mounts if line.split()[2:3] == ["cgroup2"]), None)
    path = next((line[3:] for line in own if line.startswith("0::")), None)
    if mount is None or path is None:
        return None
    home = os.path.join(mount, path.lstrip("/"))
    probe = os.path.join(home, f"lictor-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
        usable = os.path.exists(os.path.join(probe, "cgroup.procs"))
        os.rmdir(probe)
    except OSError:
        return None
    return home if usable else None


class Process:
    """A child process started by `os.posix_spawn`, in a session of its own.

    `subprocess.Popen` would do, but it and what it imports cost `lictor run` about
    3 ms before its command starts. Like ``Popen(close_fds=True)``, the child inherits
    standard input, output and error (and ``keep``) and no other descriptor; like
    `Popen.poll` and `Popen.wait`, `poll` and `wait` may be called from several
    threads (only one of them reaps the child) and give ``-N`` for a child that
    signal N ended."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._reaping = threading.Lock()

    @classmethod
    def spawn(cls, argv: Sequence[str], env: Mapping[str, str], keep: int = -1) -> Process:
        """Start ``argv[0]`` (looked up in ``PATH`` if it has no slash): `OSError`, such
        as `FileNotFoundError`, if it cannot be executed."""
        closing = [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited(keep)]
        if keep > 2:
            os.set_inheritable(keep, True)
        try:
            run = os.posix_spawn if "/" in argv[0] else os.posix_spawnp
            pid = run(
                argv[0],
                list(argv),
                dict(env),
                file_actions=closing,
                setsid=True,
                setsigdef=RESTORED_SIGNALS,  # Python ignores them; a command expects neither
            )
            return cls(pid)
        finally:
            if keep > 2:
                os.set_inheritable(keep, False)

    def poll(self) -> int | None:
        """Its exit code if it has ended, else None (and None while another thread waits)."""
        if self.returncode is None and self._reaping.acquire(blocking=False):
            try:
                if self.returncode is None:
                    pid, status = _waitpid(self.pid, os.WNOHANG)
                    if pid == self.pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
            finally:
                self._reaping.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for it to end; its exit code. With ``timeout`` (seconds), `TimeoutError`
        if it is still running by then."""
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while (code := self.poll()) is None:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"process {self.pid} still runs after {timeout} s")
                time.sleep(0.005)
            return code
        while self.returncode is None:
            with self._reaping:
                if self.returncode is None:
                    _, status = _waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _waitpid(pid: int, options: int) -> tuple[int, int]:
    """`os.waitpid`; a child already reaped by the system (this process was started with
    SIGCHLD ignored, which it inherits) counts as ended with status 0, as `subprocess`
    counts it: its status is gone."""
    try:
        return os.waitpid(pid, options)
    except ChildProcessError:
        return pid, 0


def _inherited(keep: int) -> list[int]:
    """This process's inheritable descriptors above standard error but ``keep``: closed
    in a spawned child (Python makes its own descriptors non-inheritable; these came
    from whoever started this process)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    found = []
    for fd in fds:
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):  # the directory's own, closed already
                if os.get_inheritable(fd):
                    found.append(fd)
    return found


class Supervised:
    """A started command: its process, its process group and, if any, its cgroup."""

    def __init__(self, process: Process, cgroup: str | None) -> None:
        self.process = process
        self.pgid = process.pid  # a new session: the leader's pid is the group id
        self.cgroup = cgroup

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        home: str | None,
        user: str | None = None,
    ) -> Supervised:
        """Start ``argv`` (as ``user`` if given: its uid, gid and groups, set by
        util-linux's ``setpriv`` once the command is in its cgroup); `FileNotFoundError`
        and `PermissionError` as the system raises them. It inherits no descriptor but
        standard input, output and error."""
        if user is not None:
            argv = [*as_user(user), *argv]
        cgroup = _new_cgroup(home) if home is not None else None
        if cgroup is None:
            process = Process.spawn(list(argv), env)
        else:
            process = Process.spawn(["/bin/sh", "-c", _JOIN_CGROUP, cgroup, *argv], env)
        return cls(process, cgroup)

    @classmethod
    def prepare(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        home: str | None,
        user: str | None = None,
    ) -> Pending:
        """`start`, in two steps: with a cgroup, its shell starts now and joins the
        cgroup while the caller goes on; the command runs only at `Pending.open`."""
        return Pending(argv, env, home, user)

    def pids(self) -> list[int]:
        """Processes in the cgroup (empty without one)."""
        if self.cgroup is None:
            return []
        try:
            text = _read(os.path.join(self.cgroup, "cgroup.procs"))
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group and to every process in the cgroup."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL everything: ``cgroup.kill`` where the kernel has it, then each process."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                _write(os.path.join(self.cgroup, "cgroup.kill"), "1")
        self.signal(signal.SIGKILL)

    def terminate(self, grace: float) -> None:
        """SIGTERM now; SIGKILL whatever is left after ``grace`` seconds (in a thread)."""
        self.signal(signal.SIGTERM)
        threading.Thread(target=self._kill_after, args=(grace,), daemon=True).start()

    def _kill_after(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not self.pids():
                break
            time.sleep(0.02)
        self.kill()

    def wait(self) -> int:
        """Wait for the command; its exit code (``-N`` if signal N ended it)."""
        return self.process.wait()

    def clean_up(self) -> None:
        """After the command ended: kill what it left behind, remove its cgroup."""
        self.kill()
        if self.cgroup is None:
            return
        deadline = time.monotonic() + 2.0
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            os.rmdir(self.cgroup)


class Pending:
    """A command not started yet (`Supervised.prepare`): with a cgroup, a shell already
    in it, waiting at its gate; else only what to start."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], home: str | None, user: str | None
    ) -> None:
        self.argv, self._env, self._user = list(argv), dict(env), user
        self._shell: Process | None = None
        self._gate, self._cgroup = -1, ""
        self._home: str | None = None  # set if the cgroup is to be joined only at `open`
        self._error: OSError | None = None
        if home is not None:
            try:
                self._hold(home)
            except OSError as e:  # raised where `start` would raise it: at `open`
                self._error = e

    def _hold(self, home: str) -> None:
        argv = [*as_user(self._user), *self.argv] if self._user is not None else self.argv
        read, gate = os.pipe()  # the lowest free descriptors
        cgroup = _new_cgroup(home) if read < 10 else None  # a shell reads only fds 0 to 9
        shell = None
        if cgroup is not None:
            try:
                shim = ["/bin/sh", "-c", _JOIN_CGROUP_AT_GATE, cgroup, str(read), *argv]
                shell = Process.spawn(shim, self._env, keep=read)
            except OSError:
                with contextlib.suppress(OSError):
                    os.rmdir(cgroup)
        os.close(read)
        if shell is None or cgroup is None:  # started at `open`, as `Supervised.start` does
            os.close(gate)
            self._home = home
            return
        self._shell, self._gate, self._cgroup = shell, gate, cgroup

    def open(self, extra: Mapping[str, str]) -> Supervised:
        """Start the command with ``extra`` added to its environment; `FileNotFoundError`
        and `PermissionError` as `Supervised.start` raises."""
        if self._error is not None:
            raise self._error
        if self._shell is None:
            return Supervised.start(self.argv, {**self._env, **extra}, self._home, self._user)
        lines = [f"{name}={value}\n" for name, value in extra.items()]
        if any(
            not name.isidentifier() or "\n" in value or "\0" in value
            for name, value in extra.items()
        ):
            raise ValueError("an environment variable the gate cannot pass on")
        try:
            os.write(self._gate, ("".join(lines) + "go\n").encode())
        finally:
            os.close(self._gate)
            self._gate = -1
        shell, self._shell = self._shell, None
        return Supervised(shell, self._cgroup)

    @property
    def held(self) -> tuple[int, str] | None:
        """The waiting shell's process group and cgroup, for a `Watchdog` to guard (None
        while nothing waits)."""
        return (self._shell.pid, self._cgroup) if self._shell is not None else None

    def cancel(self) -> None:
        """End the waiting shell, the command unstarted (nothing once `open` ran)."""
        if self._gate >= 0:
            os.close(self._gate)  # the shell reads EOF and exits
            self._gate = -1
        if self._shell is not None:
            self._shell.wait()
            self._shell = None
            with contextlib.suppress(OSError):
                os.rmdir(self._cgroup)


class Watchdog:
    """A forked process that kills a command if its supervisor dies.

    Fork it before starting any thread. `guard` tells it what to kill;
    `release` (at a normal end) lets it go without killing anything.
    """

    def __init__(self) -> None:
        read, self._write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._write)
            _watch(read)  # never returns
        os.close(read)

    def guard(self, supervised: Supervised) -> None:
        self.guard_group(supervised.pgid, supervised.cgroup)

    def guard_group(self, pgid: int, cgroup: str | None) -> None:
        """Kill process group ``pgid`` and ``cgroup`` (and remove it) if the supervisor
        dies: a started command, or a shell waiting at its gate (`Pending.held`)."""
        os.write(self._write, f"{pgid} {cgroup or '-'}\n".encode())

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write, b"done\n")
            os.close(self._write)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _watch(read: int) -> None:
    """The watchdog's whole life: follow the pipe; on EOF without "done", kill."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    target, buffered = "", b""
    while True:
        try:
            chunk = os.read(read, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            if line == b"done":
                os._exit(0)
            target = line.decode()
    if target:
        pgid, cgroup = target.split(" ", 1)
        with contextlib.suppress(OSError):
            os.killpg(int(pgid), signal.SIGKILL)
        if cgroup != "-":
            _kill_cgroup(cgroup)
    os._exit(0)


def _kill_cgroup(cgroup: str) -> None:
    with contextlib.suppress(OSError):
        _write(os.path.join(cgroup, "cgroup.kill"), "1")
    for _ in range(200):
        try:
            pids = [int(p) for p in _read(os.path.join(cgroup, "cgroup.procs")).split()]
        except OSError:
            return
        if not pids:
            break
        for pid in pids:  # kernels without cgroup.kill
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.rmdir(cgroup)


def _new_cgroup(home: str) -> str | None:
    """A new cgroup under ``home`` for one command, None if none can be made."""
    cgroup = os.path.join(home, f"lictor-run-{os.getpid()}-{next(_names)}")
    try:
        os.mkdir(cgroup)
    except OSError:
        return None
    return cgroup


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
