"""``lictor serve --workers N``: several processes serving one data directory.

Python runs one thread of a process at a time, so one process uses about one core.
With ``--workers N`` the server process takes the data directory's lock, opens the
directory once (keys, admin credential, schema), binds the listening socket, and
starts N workers: ``lictor serve`` again, each handed the lock's and the socket's
descriptors (``--worker-fds``). Each worker is a whole control plane over the same
log, as replicas are (docs/adr/0008): the directory's SQLite file shared through
`lictor.store.workers.WorkerStore`, or the PostgreSQL database of ``--database``.
Each worker accepts on a listening socket of its own, all bound to the one port with
``SO_REUSEPORT``: the kernel spreads new connections evenly among them (by a hash of
each connection's addresses). One socket shared by all would go to whichever worker
wakes first: a client opening its connections at once found most of them on one
worker while the other idled. A port some other socket already listens on is refused,
as without ``SO_REUSEPORT`` (Linux lets the same user's sockets share a port: two
servers on one port would each get part of the clients). One log, one signing key,
one lineage: workers take turns at the log's write path, and each commit is checked
against the head it was planned on.

The server process serves nothing itself. It replaces a worker that exits, and gives
up (stopping the others, exit status 1) when workers keep exiting within
`MIN_UPTIME_S` of their start; on SIGTERM or SIGINT it stops every worker and waits
for them (killing any still running `STOP_WAIT_S` later). A worker dies with the
server process (``PR_SET_PDEATHSIG``), so none outlives it holding the socket.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from lictor.datadir import open_data_dir

MIN_UPTIME_S = 5.0  # a worker that exits sooner counts as failing to start
MAX_QUICK_EXITS = 3  # this many in a row and the server gives up
STOP_WAIT_S = 10.0
POLL_S = 0.2
PR_SET_PDEATHSIG = 1
LISTEN = "0A"  # a listening socket's state in /proc/net/tcp


@dataclass
class Worker:
    """One worker process and when it started."""

    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port (``port`` 0: one the kernel picks), one per
    worker. `OSError` (address in use) if any other socket listens on that port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # the rest bind where the first did
            sock.listen(2048)
            sock.set_inheritable(True)
        if _listening_elsewhere(port, sockets):
            raise OSError(errno.EADDRINUSE, f"port {port} is in use by another server")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listening_elsewhere(port: int, ours: list[socket.socket]) -> bool:
    """Whether a socket not in ``ours`` listens on ``port`` (TCP, IPv4 or IPv6), as
    Linux lists them in ``/proc/net/tcp*``; False where it does not list them."""
    mine = {os.fstat(sock.fileno()).st_ino for sock in ours}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl, local address:port, remote, state, ..., inode
            if len(fields) > 9 and fields[3] == LISTEN:
                listening_port = int(fields[1].rsplit(":", 1)[1], 16)
                if listening_port == port and int(fields[9]) not in mine:
                    return True
    return False


def worker_argv(args: argparse.Namespace, lock: int, sock: int) -> list[str]:
    """The command line of one worker: the server's options, and the descriptors."""
    argv = [sys.executable, "-m", "lictor.cli.main", "serve", "--data-dir", str(args.data_dir)]
    argv += ["--header-timeout", str(args.header_timeout)]
    argv += ["--body-timeout", str(args.body_timeout)]
    argv += ["--max-connections", str(args.max_connections)]
    return [*argv, "--worker-fds", f"{lock},{sock}"]  # the database URL goes by environment


def serve_workers(args: argparse.Namespace, announce: str) -> int:
    """Run ``args.workers`` workers until a signal stops them (see the module)."""
    data = open_data_dir(args.data_dir, args.origin, args.database)
    data.store.close()  # each worker opens its own; the lock stays held here
    sockets = listen(args.host, args.port, args.workers)
    port = sockets[0].getsockname()[1]
    print(announce.format(port=port, workers=args.workers), file=sys.stderr, flush=True)
    # worker n, and any worker replacing it, accepts on socket n: connections waiting
    # there when a worker dies are served by the next one
    commands = [worker_argv(args, data.lock, sock.fileno()) for sock in sockets]
    env = dict(os.environ)  # a database URL may hold a password: never on a command line
    if args.database:
        env["LICTOR_DATABASE"] = args.database
    else:
        env.pop("LICTOR_DATABASE", None)
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    workers = [_start(commands[n], data.lock, sockets[n], env) for n in range(args.workers)]
    quick_exits = 0
    try:
        while not stopping:
            time.sleep(POLL_S)
            for n, worker in enumerate(workers):
                code = worker.process.poll()
                if code is None or stopping:
                    continue
                lived = time.monotonic() - worker.started
                quick_exits = quick_exits + 1 if lived < MIN_UPTIME_S else 0
                print(
                    f"lictor: worker {worker.process.pid} exited ({code}) after {lived:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                if quick_exits >= MAX_QUICK_EXITS:
                    print("lictor: workers keep exiting; stopping", file=sys.stderr, flush=True)
                    return 1
                workers[n] = _start(commands[n], data.lock, sockets[n], env)
        return 0
    finally:
        _stop_all(workers)
        for s, handler in previous.items():
            signal.signal(s, handler)
        for sock in sockets:
            sock.close()
        data.close()


def _start(argv: list[str], lock: int, sock: socket.socket, env: dict[str, str]) -> Worker:
    server = os.getpid()
    fds = (lock, sock.fileno())
    return Worker(
        subprocess.Popen(argv, pass_fds=fds, env=env, preexec_fn=lambda: _die_with(server))
    )


def _die_with(server: int) -> None:
    """In the worker, before it runs: SIGTERM when the server process dies; and if it
    died already (between the fork and now), exit at once. Linux only: elsewhere a
    worker outlives a server killed with SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: nothing to set
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != server:
        os._exit(1)


def _stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    deadline = time.monotonic() + STOP_WAIT_S
    for worker in workers:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def worker_fds(text: str) -> tuple[int, int]:
    """``--worker-fds LOCK,SOCKET``: the descriptors a worker is handed."""
    try:
        lock, sock = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two descriptors LOCK,SOCKET: {text}") from None
    return lock, sock
