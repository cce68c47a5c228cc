"""Unit tests for `lictor.log.merkle`: stored-hash layout, provers, verifiers, CompactRange."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import pytest
from naive_rfc6962 import MemoryTree, Naive

from lictor.errors import LogError, ProofError, TreeError
from lictor.log import merkle

ENTRIES = [f"entry {i}".encode() for i in range(70)]
TREE = MemoryTree.of_entries(ENTRIES)
NAIVE = Naive.of_entries(ENTRIES)
H = hashlib.sha256(b"some hash").digest()


class CountingReader:
    """Wraps a reader and records every `read_hashes` call."""

    def __init__(self, inner: MemoryTree) -> None:
        self.inner = inner
        self.calls: list[list[int]] = []

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls.append(list(indexes))
        return self.inner.read_hashes(indexes)


class BadReader:
    """Returns the wrong number of hashes, or hashes of the wrong length."""

    def __init__(self, count_delta: int = 0, length: int = 32) -> None:
        self.count_delta = count_delta
        self.length = length

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return [b"\x00" * self.length] * (len(indexes) + self.count_delta)


# --- stored-hash layout (Go's sumdb/tlog) ------------------------------------

# The first stored hashes in Go's layout, as (level, n): each leaf is followed
# by the subtrees it completes.
LAYOUT = [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0), (0, 4), (0, 5), (1, 2)]
LAYOUT += [(0, 6), (0, 7), (1, 3), (2, 1), (3, 0), (0, 8)]


def test_stored_hash_layout() -> None:
    assert [merkle.split_stored_hash_index(i) for i in range(len(LAYOUT))] == LAYOUT
    assert [merkle.stored_hash_index(level, n) for level, n in LAYOUT] == list(range(len(LAYOUT)))


def test_split_inverts_stored_hash_index() -> None:
    for index in range(5000):
        level, n = merkle.split_stored_hash_index(index)
        assert merkle.stored_hash_index(level, n) == index


def test_stored_hash_count() -> None:
    assert [merkle.stored_hash_count(n) for n in range(9)] == [0, 1, 3, 4, 7, 8, 10, 11, 15]
    tree = MemoryTree()
    for i in range(300):
        assert len(tree.stored) == merkle.stored_hash_count(i)
        tree.append_leaf(merkle.leaf_hash(bytes([i % 256])))
    assert merkle.stored_hash_count(2**62) == 2**63 - 1


def test_stored_hashes_are_subtree_roots() -> None:
    for index, h in enumerate(TREE.stored):
        level, n = merkle.split_stored_hash_index(index)
        assert h == NAIVE.mth(n << level, (n + 1) << level)


@pytest.mark.parametrize(
    "call",
    [
        lambda: merkle.stored_hash_index(-1, 0),
        lambda: merkle.stored_hash_index(0, -1),
        lambda: merkle.split_stored_hash_index(-1),
        lambda: merkle.stored_hash_count(-1),
        lambda: merkle.tree_hash(-1, TREE),
        lambda: merkle.new_stored_hashes(-1, H, TREE),
    ],
)
def test_negative_arguments_are_tree_errors(call: Callable[[], object]) -> None:
    with pytest.raises(TreeError):
        call()


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_new_stored_hashes_rejects_wrong_length_leaf(length: int) -> None:
    with pytest.raises(ProofError):
        merkle.new_stored_hashes(TREE.size, b"\x01" * length, TREE)


def test_new_stored_hashes_closes_subtrees() -> None:
    tree = MemoryTree.of_entries(ENTRIES[:7])
    new = merkle.new_stored_hashes(7, merkle.leaf_hash(ENTRIES[7]), tree)
    assert new == [NAIVE.leaves[7], NAIVE.mth(6, 8), NAIVE.mth(4, 8), NAIVE.mth(0, 8)]
    assert merkle.new_stored_hashes(8, NAIVE.leaves[8], TREE) == [NAIVE.leaves[8]]


# --- roots and provers --------------------------------------------------------


def test_tree_hash_matches_naive() -> None:
    for size in range(TREE.size + 1):
        assert merkle.tree_hash(size, TREE) == NAIVE.root(size)
        assert merkle.merkle_root(TREE.leaves[:size]) == NAIVE.root(size)
    assert merkle.merkle_root([]) == merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_empty_tree_reads_nothing() -> None:
    reader = BadReader(count_delta=5)
    assert merkle.tree_hash(0, reader) == merkle.EMPTY_ROOT
    assert merkle.prove_consistency(1, 1, reader) == []


def test_proofs_read_once_and_logarithmically() -> None:
    reader = CountingReader(TREE)
    for size in (1, 2, 5, 64, 70):
        for index in range(size):
            reader.calls.clear()
            proof = merkle.prove_inclusion(index, size, reader)
            assert proof == NAIVE.inclusion(index, size)
            assert len(reader.calls) <= 1
            assert sum(len(c) for c in reader.calls) <= 2 * size.bit_length()
        for first in range(1, size + 1):
            reader.calls.clear()
            proof = merkle.prove_consistency(first, size, reader)
            assert proof == NAIVE.consistency(first, size)
            assert len(reader.calls) <= 1
            assert sum(len(c) for c in reader.calls) <= 2 * size.bit_length()
        reader.calls.clear()
        merkle.tree_hash(size, reader)
        assert len(reader.calls) == 1
        assert len(reader.calls[0]) == bin(size).count("1")


def test_inclusion_proofs_sharing_a_memo_read_each_subtree_once() -> None:
    """A memo kept across calls (one log, growing) gives the same proofs; a batch's
    receipts read only what an earlier proof did not already hash."""
    reader, known = CountingReader(TREE), {}
    for size in range(1, len(ENTRIES) + 1):
        for index in range(max(0, size - 8), size):
            assert merkle.prove_inclusion(index, size, reader, known) == NAIVE.inclusion(
                index, size
            )
    reader.calls.clear()
    for index in range(62, 70):  # the last batch again: every sibling is known
        assert merkle.prove_inclusion(index, 70, reader, known) == NAIVE.inclusion(index, 70)
    assert reader.calls == []


def test_a_batch_is_proven_at_once_as_one_leaf_at_a_time_would_be() -> None:
    reader = CountingReader(TREE)
    for size in range(1, len(ENTRIES) + 1):
        for first in range(size):
            reader.calls.clear()
            proofs = merkle.prove_inclusions(first, size, reader)
            assert proofs == [NAIVE.inclusion(i, size) for i in range(first, size)]
            assert len(reader.calls) <= 1  # every missing sibling in one read


def test_a_batch_proven_at_once_uses_and_fills_the_memo() -> None:
    reader, known = CountingReader(TREE), {}
    assert merkle.prove_inclusions(40, 64, reader, known) == [
        NAIVE.inclusion(i, 64) for i in range(40, 64)
    ]
    reader.calls.clear()
    for index in range(40, 64):  # one at a time now: nothing left to read
        assert merkle.prove_inclusion(index, 64, reader, known) == NAIVE.inclusion(index, 64)
    assert reader.calls == []


@pytest.mark.parametrize(
    "first,size", [(-1, 5), (5, 5), (6, 5), (0, 0), (1, merkle.MAX_PROOFS_AT_ONCE + 2)]
)
def test_prove_inclusions_out_of_range(first: int, size: int) -> None:
    with pytest.raises(TreeError):
        merkle.prove_inclusions(first, size, TREE)


def test_a_full_memo_starts_over() -> None:
    known = {(-i - 1, -i): H for i in range(merkle.MAX_KNOWN_SUBTREES + 1)}
    assert merkle.prove_inclusion(5, 70, TREE, known) == NAIVE.inclusion(5, 70)
    assert len(known) == len(NAIVE.inclusion(5, 70))  # only what this proof hashed


@pytest.mark.parametrize("index,size", [(-1, 5), (5, 5), (6, 5), (0, 0), (0, -1)])
def test_prove_inclusion_out_of_range(index: int, size: int) -> None:
    with pytest.raises(TreeError):
        merkle.prove_inclusion(index, size, TREE)


@pytest.mark.parametrize("first,second", [(0, 5), (-1, 5), (6, 5), (0, 0)])
def test_prove_consistency_out_of_range(first: int, second: int) -> None:
    with pytest.raises(TreeError):
        merkle.prove_consistency(first, second, TREE)


@pytest.mark.parametrize("reader", [BadReader(count_delta=-1), BadReader(count_delta=1)])
def test_reader_returning_wrong_count(reader: BadReader) -> None:
    with pytest.raises(TreeError):
        merkle.tree_hash(7, reader)
    with pytest.raises(TreeError):
        merkle.prove_inclusion(3, 7, reader)
    with pytest.raises(TreeError):
        merkle.prove_consistency(3, 7, reader)


@pytest.mark.parametrize("length", [0, 20, 33])
def test_reader_returning_wrong_length(length: int) -> None:
    reader = BadReader(length=length)
    for call in (
        lambda: merkle.tree_hash(7, reader),
        lambda: merkle.prove_inclusion(3, 7, reader),
        lambda: merkle.prove_consistency(3, 7, reader),
        lambda: merkle.new_stored_hashes(7, H, reader),
    ):
        with pytest.raises(LogError):
            call()


# --- verifiers ------------------------------------------------------------------


def _incl(index: int, size: int) -> tuple[bytes, list[bytes], bytes]:
    return NAIVE.leaves[index], NAIVE.inclusion(index, size), NAIVE.root(size)


def test_verify_inclusion_accepts_naive_proofs() -> None:
    for size in range(1, TREE.size + 1):
        for index in range(size):
            leaf, proof, root = _incl(index, size)
            merkle.verify_inclusion(index, size, leaf, proof, root)
            assert merkle.root_from_inclusion(index, size, leaf, proof) == root


@pytest.mark.parametrize("index,size", [(5, 5), (6, 5), (-1, 5), (0, 0), (0, -3)])
def test_verify_inclusion_index_out_of_range(index: int, size: int) -> None:
    leaf, proof, root = _incl(2, 5)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, proof, root)
    with pytest.raises(ProofError):
        merkle.root_from_inclusion(index, size, leaf, proof)


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_verify_inclusion_rejects_wrong_length_hashes(length: int) -> None:
    leaf, proof, root = _incl(3, 7)
    bad = b"\x02" * length
    with pytest.raises(ProofError):
        merkle.verify_inclusion(3, 7, bad, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(3, 7, leaf, proof, bad)
    for i in range(len(proof)):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(3, 7, leaf, [*proof[:i], bad, *proof[i + 1 :]], root)


def test_verify_inclusion_rejects_wrong_proof_lengths() -> None:
    leaf, proof, root = _incl(3, 7)
    with pytest.raises(ProofError, match="too short"):
        merkle.verify_inclusion(3, 7, leaf, proof[:-1], root)
    with pytest.raises(ProofError, match="too long"):
        merkle.verify_inclusion(3, 7, leaf, [*proof, H], root)
    with pytest.raises(ProofError, match="too long"):
        merkle.verify_inclusion(0, 1, NAIVE.leaves[0], [H], NAIVE.root(1))
    with pytest.raises(ProofError, match="does not lead"):
        merkle.verify_inclusion(3, 7, leaf, proof, NAIVE.root(6))


def test_verify_consistency_accepts_naive_proofs() -> None:
    for size in range(1, TREE.size + 1):
        for first in range(1, size + 1):
            proof = NAIVE.consistency(first, size)
            merkle.verify_consistency(first, size, NAIVE.root(first), NAIVE.root(size), proof)


@pytest.mark.parametrize("first,second", [(-1, 5), (3, -1), (6, 5), (0, 5), (0, 0)])
def test_verify_consistency_bad_sizes(first: int, second: int) -> None:
    with pytest.raises(ProofError):
        merkle.verify_consistency(first, second, NAIVE.root(3), NAIVE.root(5), [H])


@pytest.mark.parametrize("length", [0, 31, 33])
def test_verify_consistency_rejects_wrong_length_hashes(length: int) -> None:
    proof, r1, r2 = NAIVE.consistency(3, 7), NAIVE.root(3), NAIVE.root(7)
    bad = b"\x03" * length
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 7, bad, r2, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 7, r1, bad, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 3, r1, bad, [])
    for i in range(len(proof)):
        with pytest.raises(ProofError):
            merkle.verify_consistency(3, 7, r1, r2, [*proof[:i], bad, *proof[i + 1 :]])


def test_verify_consistency_edge_cases() -> None:
    r3, r7 = NAIVE.root(3), NAIVE.root(7)
    proof = NAIVE.consistency(3, 7)
    merkle.verify_consistency(3, 3, r3, r3, [])
    with pytest.raises(ProofError, match="must be empty"):
        merkle.verify_consistency(3, 3, r3, r3, [H])
    with pytest.raises(ProofError, match="roots differ"):
        merkle.verify_consistency(3, 3, r3, r7, [])
    with pytest.raises(ProofError, match="empty"):
        merkle.verify_consistency(3, 7, r3, r7, [])
    with pytest.raises(ProofError, match="too short"):
        merkle.verify_consistency(3, 7, r3, r7, proof[:-1])
    with pytest.raises(ProofError, match="too long"):
        merkle.verify_consistency(3, 7, r3, r7, [*proof, H])
    with pytest.raises(ProofError, match="first root"):
        merkle.verify_consistency(3, 7, NAIVE.root(4), r7, proof)
    with pytest.raises(ProofError, match="second root"):
        merkle.verify_consistency(3, 7, r3, NAIVE.root(8), proof)
    # A power-of-two first tree: the proof omits the first root.
    merkle.verify_consistency(4, 7, NAIVE.root(4), r7, NAIVE.consistency(4, 7))
    assert NAIVE.root(4) not in NAIVE.consistency(4, 7)


# --- CompactRange -----------------------------------------------------------------


def test_compact_range_root_and_closed_subtrees() -> None:
    frontier = merkle.CompactRange()
    assert frontier.root() == merkle.EMPTY_ROOT
    for i, leaf in enumerate(NAIVE.leaves):
        closed = frontier.append(leaf)
        assert closed[0] == (0, i, leaf)
        for level, n, h in closed:
            # Every closed subtree ends at the new leaf.
            assert (n + 1) << level == i + 1
            assert h == NAIVE.mth(n << level, (n + 1) << level)
        # Exactly the hashes the stored-hash layout stores after this leaf.
        assert [h for _, _, h in closed] == TREE.stored[
            merkle.stored_hash_count(i) : merkle.stored_hash_count(i + 1)
        ]
        assert frontier.size == i + 1
        assert len(frontier.hashes) == bin(i + 1).count("1")
        assert frontier.root() == NAIVE.root(i + 1)


def test_compact_range_resumes_from_its_hashes() -> None:
    for size in range(TREE.size):
        frontier = merkle.CompactRange()
        for leaf in NAIVE.leaves[:size]:
            frontier.append(leaf)
        resumed = merkle.CompactRange(size, frontier.hashes)
        for leaf in NAIVE.leaves[size:]:
            resumed.append(leaf)
        assert resumed.root() == NAIVE.root(TREE.size)


@pytest.mark.parametrize(
    "size,hashes",
    [(-1, []), (1, []), (3, [H]), (0, [H]), (2, [b"short"]), (1, [b""])],
)
def test_compact_range_rejects_bad_state(size: int, hashes: list[bytes]) -> None:
    with pytest.raises(LogError):
        merkle.CompactRange(size, hashes)


def test_compact_range_rejects_wrong_length_leaf() -> None:
    frontier = merkle.CompactRange()
    with pytest.raises(ProofError):
        frontier.append(b"\x00" * 31)
    assert frontier.size == 0


# --- absurd sizes and indexes --------------------------------------------------------

MAX = merkle.MAX_TREE_SIZE
ABSURD = [MAX + 1, 2**64, 2**1000, 2**1100, 2**20_000]
ABSURD_IDS = ["2^63", "2^64", "2^1000", "2^1100", "2^20000"]


class NeverReader:
    """A reader for arguments that must be rejected before anything is read."""

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        raise AssertionError("read_hashes called")


class ConstantReader:
    """Any stored hash index reads as the same hash: enough for the largest trees."""

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        assert all(0 <= i < merkle.MAX_STORED_HASHES for i in indexes)
        return [H] * len(indexes)


def test_max_tree_size_is_the_checkpoint_limit() -> None:
    assert MAX == 2**63 - 1
    assert merkle.stored_hash_count(MAX) == merkle.MAX_STORED_HASHES


@pytest.mark.parametrize("size", ABSURD, ids=ABSURD_IDS)
def test_provers_reject_absurd_sizes_up_front(size: int) -> None:
    # 2^1000 and up used to recurse once per bit and raise RecursionError.
    reader = NeverReader()
    for call in (
        lambda: merkle.tree_hash(size, reader),
        lambda: merkle.prove_inclusion(0, size, reader),
        lambda: merkle.prove_inclusion(size - 1, size, reader),
        lambda: merkle.prove_consistency(1, size, reader),
        lambda: merkle.prove_consistency(size - 1, size, reader),
        lambda: merkle.stored_hash_count(size),
        lambda: merkle.CompactRange(size, [H] * size.bit_count()),
    ):
        with pytest.raises(TreeError, match="out of range"):
            call()


def test_provers_work_up_to_the_largest_size() -> None:
    reader = ConstantReader()
    assert len(merkle.tree_hash(MAX, reader)) == 32
    for index in (0, MAX // 2, MAX - 1):
        proof = merkle.prove_inclusion(index, MAX, reader)
        root = merkle.root_from_inclusion(index, MAX, H, proof)
        assert len(proof) <= 63 and len(root) == 32
    for first in (1, 2**62, MAX - 1, MAX):
        assert len(merkle.prove_consistency(first, MAX, reader)) <= 2 * 63
    frontier = merkle.CompactRange(MAX, [H] * 63)
    with pytest.raises(TreeError):
        frontier.append(H)
    assert frontier.size == MAX


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [*ABSURD, 2**4_000_000], ids=[*ABSURD_IDS, "2^4000000"])
def test_verifiers_reject_absurd_sizes_up_front(size: int) -> None:
    # These used to shift a huge integer once per bit (minutes for 2^4000000),
    # or fail with ValueError while formatting a number of over 4,300 digits.
    for index in (0, size - 1, size, size + 1):
        with pytest.raises(ProofError, match="out of range"):
            merkle.root_from_inclusion(index, size + 1, H, [H])
        with pytest.raises(ProofError, match="out of range"):
            merkle.verify_inclusion(index, size, H, [H] * 64, H)
    for first, second in ((size, size + 1), (1, size), (size, size), (size + 1, size)):
        with pytest.raises(ProofError, match="out of range"):
            merkle.verify_consistency(first, second, H, H, [H])
    with pytest.raises(ProofError, match="out of range"):
        merkle.root_from_inclusion(size, MAX, H, [H])


def test_verifiers_accept_the_largest_size() -> None:
    with pytest.raises(ProofError, match="too short"):
        merkle.root_from_inclusion(MAX - 1, MAX, H, [H])
    with pytest.raises(ProofError, match="too short"):
        merkle.verify_consistency(MAX - 1, MAX, H, H, [H])


@pytest.mark.parametrize("level", [0, 1, 8, 61, 62])
def test_stored_hash_index_covers_exactly_the_largest_tree(level: int) -> None:
    last = (MAX >> level) - 1  # the last complete subtree of this height
    index = merkle.stored_hash_index(level, last)
    assert index < merkle.MAX_STORED_HASHES
    assert merkle.split_stored_hash_index(index) == (level, last)
    with pytest.raises(TreeError):
        merkle.stored_hash_index(level, last + 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "call",
    [
        lambda: merkle.stored_hash_index(63, 0),
        lambda: merkle.stored_hash_index(10**12, 0),  # used to loop 10^12 times
        lambda: merkle.stored_hash_index(0, 2**20_000),
        lambda: merkle.split_stored_hash_index(merkle.MAX_STORED_HASHES),
        lambda: merkle.split_stored_hash_index(2**20_000),
        lambda: merkle.new_stored_hashes(MAX, H, NeverReader()),
        lambda: merkle.new_stored_hashes(2**20_000, H, NeverReader()),
    ],
)
def test_stored_hash_indexes_beyond_the_largest_tree(call: Callable[[], object]) -> None:
    with pytest.raises(TreeError):
        call()
    assert merkle.split_stored_hash_index(merkle.MAX_STORED_HASHES - 1) == (0, MAX - 1)
