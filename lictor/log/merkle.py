"""RFC 6962 Merkle tree math over a `HashReader`; no I/O, no clock.

Storage holds one flat sequence of *stored hashes*, laid out as Go's
`golang.org/x/mod/sumdb/tlog` lays them out: after leaf ``n`` come the leaf
hash and the hash of every complete subtree that leaf completes. A tree of
``n`` leaves has fewer than ``2n`` stored hashes, and every root, inclusion
proof and consistency proof needs only O(log n) of them, read in one call.

Proof *generation* follows tlog (``ProveRecord``/``ProveTree``) and yields the
RFC 6962 ``PATH``/``SUBPROOF`` lists; proof *verification* is RFC 9162
§2.1.3.2 and §2.1.4.2. Every input is checked before any work: tree sizes
are at most `MAX_TREE_SIZE` (2**63 - 1, the largest size a checkpoint may
state), leaf indexes are below the size, stored-hash indexes belong to such a
tree, and every hash is exactly 32 bytes. So no input makes the math recurse
deeper than 63 levels or loop over more than 63 bits. Violations raise
`ProofError` (bad proof) or `TreeError` (bad arguments), both `LogError`s.

Policy where implementations differ (see FORMATS.md): a consistency proof
*from* size 0 is rejected, even to size 0, as transparency-dev/merkle does; a
caller that wants tlog-witness's "size 0 is consistent with anything" checks
that case itself before calling.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping, Sequence
from typing import Protocol

from lictor.errors import ProofError, TreeError
from lictor.log.encoding import describe_int

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_TREE_SIZE = (1 << 63) - 1
_MAX_HEIGHT = MAX_TREE_SIZE.bit_length()  # no complete subtree is this tall
MAX_KNOWN_SUBTREES = 4096  # subtree hashes a `prove_inclusion` memo keeps at most


class HashReader(Protocol):
    """Reads stored hashes by stored-hash index (see `stored_hash_index`).

    Must return exactly one 32-byte hash per requested index, in order, or raise.
    """

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]: ...


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def stored_hash_index(level: int, n: int) -> int:
    """Where the hash of the ``n``-th complete subtree of height ``level`` is stored.

    The subtree must fit in a tree of `MAX_TREE_SIZE` leaves.
    """
    if not (0 <= level < _MAX_HEIGHT and n >= 0 and (n + 1) << level <= MAX_TREE_SIZE):
        raise TreeError(f"invalid node ({describe_int(level)}, {describe_int(n)})")
    n = ((n + 1) << level) - 1  # the subtree's last leaf; its hashes are stored after it
    # the hashes stored before it: n + n // 2 + n // 4 + ..., which is 2n - popcount(n)
    return 2 * n - n.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """Inverse of `stored_hash_index`: (level, n) of the hash stored at ``index``."""
    if not 0 <= index < MAX_STORED_HASHES:
        raise TreeError(f"invalid stored hash index {describe_int(index)}")
    n = index // 2
    index_n = stored_hash_index(0, n)
    while True:
        nxt = index_n + 1 + _trailing_zeros(n + 1)
        if nxt > index:
            break
        n += 1
        index_n = nxt
    level = index - index_n
    return level, n >> level


def stored_hash_count(size: int) -> int:
    """Number of stored hashes for a tree of ``size`` leaves."""
    _check_tree_size(size)
    if size == 0:
        return 0
    return stored_hash_index(0, size - 1) + 1 + _trailing_zeros(size)


def _check_tree_size(size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise TreeError(f"tree size {describe_int(size)} is out of range 0..{MAX_TREE_SIZE}")


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


MAX_STORED_HASHES = stored_hash_count(MAX_TREE_SIZE)


def new_stored_hashes(index: int, leaf: bytes, reader: HashReader) -> list[bytes]:
    """The hashes to store after appending leaf hash ``leaf`` at ``index``.

    They start at stored index `stored_hash_count(index)`: the leaf hash, then
    one hash for every complete subtree the new leaf closes.
    """
    if not 0 <= index < MAX_TREE_SIZE:
        raise TreeError(f"invalid leaf index {describe_int(index)}")
    _check_hash(leaf)
    m = _trailing_zeros(index + 1)
    indexes = [stored_hash_index(i, (index >> i) - 1) for i in reversed(range(m))]
    old = _read(reader, indexes)
    hashes = [leaf]
    h = leaf
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        hashes.append(h)
    return hashes


def _maxpow2(n: int) -> tuple[int, int]:
    """Largest power of two strictly below ``n`` (for n >= 2), with its log2."""
    level = (n - 1).bit_length() - 1
    return 1 << level, level


def _subtree_index(lo: int, hi: int, need: list[int]) -> None:
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        need.append(stored_hash_index(level, lo >> level))
        lo += k


def _subtree_hash(lo: int, hi: int, hashes: list[bytes], pos: int) -> tuple[bytes, int]:
    count = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        count += 1
        lo += k
    h = hashes[pos + count - 1]
    for i in range(count - 2, -1, -1):
        h = node_hash(hashes[pos + i], h)
    return h, pos + count


def tree_hash(size: int, reader: HashReader) -> bytes:
    """The RFC 6962 root of the first ``size`` leaves."""
    _check_tree_size(size)
    if size == 0:
        return EMPTY_ROOT
    need: list[int] = []
    _subtree_index(0, size, need)
    h, _ = _subtree_hash(0, size, _read(reader, need), 0)
    return h


def prove_inclusion(
    index: int,
    size: int,
    reader: HashReader,
    known: MutableMapping[tuple[int, int], bytes] | None = None,
) -> list[bytes]:
    """RFC 6962 ``PATH(index, D[size])``: the leaf's sibling first.

    ``known`` remembers subtree hashes by leaf range ``(lo, hi)`` across calls
    on one log (a range's hash never changes in an append-only log): the
    receipts of one batch share most of their siblings.
    """
    _check_tree_size(size)
    if not 0 <= index < size:
        raise TreeError(f"index {describe_int(index)} out of range for tree size {size}")
    siblings: list[tuple[int, int]] = []  # top down
    lo, hi = 0, size
    while hi - lo > 1:
        k, _ = _maxpow2(hi - lo)
        if index < lo + k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
    found = _range_hashes(siblings, reader, known)
    return [found[r] for r in reversed(siblings)]


def _range_hashes(
    ranges: list[tuple[int, int]],
    reader: HashReader,
    known: MutableMapping[tuple[int, int], bytes] | None,
) -> dict[tuple[int, int], bytes]:
    """The hash of each leaf range: from the memo ``known``, else folded from stored
    hashes read in one call (and then kept in ``known``)."""
    memo = {} if known is None else known
    found = {r: h for r in ranges if (h := memo.get(r)) is not None}
    missing = [r for r in dict.fromkeys(ranges) if r not in found]
    if missing:
        need: list[int] = []
        for lo, hi in missing:
            _subtree_index(lo, hi, need)
        hashes, pos = _read(reader, need), 0
        for r in missing:
            found[r], pos = _subtree_hash(r[0], r[1], hashes, pos)
        if known is not None:
            if len(known) > MAX_KNOWN_SUBTREES:
                known.clear()
            known.update((r, found[r]) for r in missing)
    return found


MAX_PROOFS_AT_ONCE = 4096  # leaves `prove_inclusions` proves in one call at most


def prove_inclusions(
    first: int,
    size: int,
    reader: HashReader,
    known: MutableMapping[tuple[int, int], bytes] | None = None,
) -> list[list[bytes]]:
    """`prove_inclusion` of every leaf from ``first`` to ``size - 1`` (a batch just
    appended), in order: one walk down the tree for all of them, each sibling found
    once, where one proof at a time walks ``log2(size)`` levels for every leaf.
    ``known`` is `prove_inclusion`'s memo."""
    _check_tree_size(size)
    if not 0 <= first < size or size - first > MAX_PROOFS_AT_ONCE:
        raise TreeError(f"cannot prove leaves {describe_int(first)} to {size - 1} at once")
    if first == size - 1:  # the last leaf alone: its path is the complete subtrees left
        need: list[int] = []  # of it (stored as they are), the smallest first
        _subtree_index(0, first, need)
        return [_read(reader, need)[::-1]]
    siblings: list[tuple[int, int]] = []
    _sibling_ranges(0, size, first, siblings)
    found = _range_hashes(siblings, reader, known)
    proofs: list[list[bytes]] = []
    _paths(0, size, first, [], found, proofs)
    return proofs


def _sibling_ranges(lo: int, hi: int, first: int, out: list[tuple[int, int]]) -> None:
    """The sibling ranges on the paths to leaves ``first``.. of ``[lo, hi)``."""
    if hi - lo == 1:
        return
    mid = lo + _maxpow2(hi - lo)[0]
    if first < mid:
        out.append((mid, hi))
        _sibling_ranges(lo, mid, first, out)
    out.append((lo, mid))
    _sibling_ranges(mid, hi, first, out)


def _paths(
    lo: int,
    hi: int,
    first: int,
    above: list[bytes],
    found: dict[tuple[int, int], bytes],
    out: list[list[bytes]],
) -> None:
    """Append the proof of each leaf ``first``.. of ``[lo, hi)``, left to right;
    ``above`` holds the siblings above ``[lo, hi)``, lowest first."""
    if hi - lo == 1:
        out.append(above)
        return
    mid = lo + _maxpow2(hi - lo)[0]
    if first < mid:
        _paths(lo, mid, first, [found[(mid, hi)], *above], found, out)
    _paths(mid, hi, first, [found[(lo, mid)], *above], found, out)


def prove_consistency(first: int, second: int, reader: HashReader) -> list[bytes]:
    """RFC 6962 ``PROOF(first, D[second])`` for ``0 < first <= second``."""
    _check_tree_size(second)
    if not 0 < first <= second:
        raise TreeError(f"no consistency proof from size {describe_int(first)} to size {second}")
    need: list[int] = []
    _tree_proof_index(0, second, first, need)
    proof, _ = _tree_proof(0, second, first, _read(reader, need), 0)
    return proof


def _tree_proof_index(lo: int, hi: int, n: int, need: list[int]) -> None:
    if n == hi:
        if lo != 0:
            _subtree_index(lo, hi, need)
        return
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_index(lo, lo + k, n, need)
        _subtree_index(lo + k, hi, need)
    else:
        _subtree_index(lo, lo + k, need)
        _tree_proof_index(lo + k, hi, n, need)


def _tree_proof(lo: int, hi: int, n: int, hashes: list[bytes], pos: int) -> tuple[list[bytes], int]:
    if n == hi:
        if lo == 0:
            return [], pos
        h, pos = _subtree_hash(lo, hi, hashes, pos)
        return [h], pos
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        proof, pos = _tree_proof(lo, lo + k, n, hashes, pos)
        other, pos = _subtree_hash(lo + k, hi, hashes, pos)
    else:
        other, pos = _subtree_hash(lo, lo + k, hashes, pos)
        proof, pos = _tree_proof(lo + k, hi, n, hashes, pos)
    proof.append(other)
    return proof, pos


def _read(reader: HashReader, indexes: list[int]) -> list[bytes]:
    if not indexes:
        return []
    hashes = reader.read_hashes(indexes)
    if len(hashes) != len(indexes):
        raise TreeError(f"hash reader returned {len(hashes)} hashes, wanted {len(indexes)}")
    for h in hashes:
        _check_hash(h)
    return hashes


def _check_hash(h: bytes, what: str = "hash") -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} is {len(h)} bytes, not {HASH_SIZE}")


def _check_proof_size(size: int, what: str = "tree size") -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ProofError(f"{what} {describe_int(size)} is out of range 0..{MAX_TREE_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root implied by an inclusion proof, or `ProofError`."""
    _check_proof_size(size)
    if not 0 <= index < size:
        raise ProofError(f"index {describe_int(index)} out of range for tree size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise `ProofError` unless ``proof`` shows leaf ``index`` in the tree ``root``."""
    _check_hash(root, "root")
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2; raise `ProofError` unless the trees are consistent."""
    _check_hash(first_root, "first root")
    _check_hash(second_root, "second root")
    for p in proof:
        _check_hash(p, "proof hash")
    _check_proof_size(first, "first size")
    _check_proof_size(second, "second size")
    if first > second:
        raise ProofError(f"first size {first} is larger than second size {second}")
    if first == 0:
        raise ProofError("no consistency proof from the empty tree")
    if first == second:
        if proof:
            raise ProofError("proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("roots differ for the same tree size")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root of a list of leaf hashes, computed directly (no stored hashes)."""
    frontier = CompactRange()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


class CompactRange:
    """The right edge of a growing tree: one hash per set bit of its size.

    Appending a leaf returns the complete subtrees it closes, as
    ``(level, index, hash)``, so a verifier can compare them with tiles.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        _check_tree_size(size)
        if size.bit_count() != len(hashes):
            raise TreeError(f"compact range of size {size} needs {size.bit_count()} hashes")
        for h in hashes:
            _check_hash(h)
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        _check_hash(leaf, "leaf hash")
        if self.size == MAX_TREE_SIZE:
            raise TreeError(f"a tree holds at most {MAX_TREE_SIZE} leaves")
        closed = [(0, self.size, leaf)]
        h, level, n = leaf, 0, self.size
        while n & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            n >>= 1
            closed.append((level, n, h))
        self.hashes.append(h)
        self.size += 1
        return closed

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h
