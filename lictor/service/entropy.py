"""Random bytes for what every decision draws: execution ids and entry salts.

`random_bytes(n)` hands out the kernel's random bytes (`os.urandom`) drawn
`POOL_BYTES` at a time, each byte once. Each `os.urandom` call is a system call
that releases the interpreter's lock; on a busy server the thread that
released it then waits for the lock again while the other thread (the event
loop, or the log's committer) holds it. Asked once per execution id and once
per entry salt, that was a hand-over of the lock on both threads for every
decision. With 32 callers the pool gave up to a few per cent more decisions a
second and less CPU per decision (docs/adr/0020).

The bytes are the kernel's, unchanged: a pool is no weaker than reading a file
of `/dev/urandom` in one go. No byte is handed out twice:

- each thread draws from a pool of its own (no lock, and no two threads
  between reading and moving the same offset);
- a child made by `os.fork` starts with no pool: it would otherwise hand out
  the very bytes its parent will (the pools are dropped after every fork).

Long-lived secrets (signing seeds, the arguments' HMAC key) do not come from
here: they are read from `os.urandom` directly, once.
"""

from __future__ import annotations

import os
import threading

POOL_BYTES = 4096  # one system call per about 150 decisions (a 10-byte id, a 16-byte salt)


class _Pools(threading.local):
    def __init__(self) -> None:
        self.data = b""
        self.at = 0


_pools = _Pools()


def random_bytes(n: int) -> bytes:
    """``n`` (at most `POOL_BYTES`) bytes from the kernel's random source, never given
    out before in this process."""
    if not 0 <= n <= POOL_BYTES:
        raise ValueError(f"random_bytes draws 0 to {POOL_BYTES} bytes, not {n}")
    pool = _pools
    at = pool.at
    end = at + n
    if end > len(pool.data):
        pool.data, at, end = os.urandom(POOL_BYTES), 0, n
    pool.at = end
    return pool.data[at:end]


def _forget_pools() -> None:
    global _pools
    _pools = _Pools()


os.register_at_fork(after_in_child=_forget_pools)
