"""Test helpers: an in-memory stored-hash tree and a naive RFC 6962 reference.

`MemoryTree` builds its storage only through `lictor.log.merkle.new_stored_hashes`,
so every test that reads from it also tests the append path. The ``naive_*``
functions are RFC 6962 §2.1 written out literally (MTH, PATH, SUBPROOF), with
no stored hashes and no cleverness, to compare the real implementation against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

from lictor.log import merkle


class MemoryTree:
    """A `HashReader` over a list of stored hashes, appended leaf by leaf."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.stored: list[bytes] = []
        self.leaves: list[bytes] = []
        for leaf in leaves:
            self.append_leaf(leaf)

    @classmethod
    def of_entries(cls, entries: Sequence[bytes]) -> MemoryTree:
        return cls([merkle.leaf_hash(e) for e in entries])

    def append_leaf(self, leaf: bytes) -> None:
        index = len(self.leaves)
        assert len(self.stored) == merkle.stored_hash_count(index)
        self.stored += merkle.new_stored_hashes(index, leaf, self)
        self.leaves.append(leaf)

    @property
    def size(self) -> int:
        return len(self.leaves)

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return [self.stored[i] for i in indexes]


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1), as RFC 6962 §2.1 splits."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Naive:
    """RFC 6962 §2.1 over a fixed list of leaf hashes, ranges memoized."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.leaves = tuple(leaf_hashes)
        self.mth = lru_cache(maxsize=None)(self._mth)

    @classmethod
    def of_entries(cls, entries: Sequence[bytes]) -> Naive:
        return cls([_leaf(e) for e in entries])

    def _mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi])."""
        n = hi - lo
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[lo]
        k = _k(n)
        return _node(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def root(self, size: int) -> bytes:
        return self.mth(0, size)

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        """PATH(m, D[lo:hi]) with m relative to lo (§2.1.1)."""
        n = hi - lo
        if n == 1:
            return []
        k = _k(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def inclusion(self, m: int, size: int) -> list[bytes]:
        return self.path(m, 0, size)

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[lo:hi], b) (§2.1.2)."""
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = _k(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]

    def consistency(self, m: int, size: int) -> list[bytes]:
        """PROOF(m, D[size]) = SUBPROOF(m, D[size], true)."""
        return self.subproof(m, 0, size, True)


def path_shape(m: int, n: int) -> tuple[str, ...]:
    """Which side each PATH(m, D[n]) hash is on: the same recursion, hashes dropped.

    An inclusion proof carries no tree size, so RFC 9162 verification accepts
    a proof for (m, n) under another size n' exactly when the two shapes match
    (e.g. leaf 0 in trees of 3 and 4 leaves); the signed root is what binds n.
    """
    if n == 1:
        return ()
    k = _k(n)
    if m < k:
        return (*path_shape(m, k), "right")
    return (*path_shape(m - k, n - k), "left")


def subproof_shape(m: int, n: int, b: bool = True) -> tuple[str, ...]:
    """The shape of SUBPROOF(m, D[n], b), like `path_shape`."""
    if m == n:
        return () if b else ("seed",)
    k = _k(n)
    if m <= k:
        return (*subproof_shape(m, k, b), "right")
    return (*subproof_shape(m - k, n - k, False), "left")
