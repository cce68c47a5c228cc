"""The pool of random bytes behind execution ids and entry salts (`lictor.service.entropy`)."""

from __future__ import annotations

import os
import threading

import pytest

from lictor.service import entropy
from lictor.service.entropy import POOL_BYTES, random_bytes


def test_each_draw_is_the_next_unused_bytes_of_the_kernels_draw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entropy._forget_pools()
    drawn: list[bytes] = []

    def urandom(n: int) -> bytes:
        drawn.append(bytes([len(drawn) + 1]) * n)
        return drawn[-1]

    monkeypatch.setattr(entropy.os, "urandom", urandom)
    first, second = random_bytes(10), random_bytes(POOL_BYTES - 10)
    assert first + second == drawn[0] and len(drawn) == 1
    third = random_bytes(16)  # the pool is spent: one more draw, from its start
    assert third == drawn[1][:16] and len(drawn) == 2
    assert random_bytes(0) == b""


@pytest.mark.parametrize("n", [-1, POOL_BYTES + 1])
def test_a_draw_outside_the_pool_is_refused_and_moves_nothing(n: int) -> None:
    entropy._forget_pools()
    before = random_bytes(8)
    with pytest.raises(ValueError, match="random_bytes draws"):
        random_bytes(n)
    after = random_bytes(8)
    assert after != before and len(after) == 8


def test_threads_never_share_bytes() -> None:
    entropy._forget_pools()
    drawn: dict[str, list[bytes]] = {}
    start = threading.Barrier(4)

    def draw(name: str) -> None:
        start.wait()
        drawn[name] = [random_bytes(16) for _ in range(2_000)]

    threads = [threading.Thread(target=draw, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for values in drawn.values() for value in values]
    assert len(every) == 8_000 and len(set(every)) == len(every)


def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    entropy._forget_pools()
    random_bytes(1)  # the parent now holds a pool a child would copy
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next draw, and leave at once
        os.write(write, random_bytes(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_bytes(32)  # the parent's next bytes, which the child's copy held
