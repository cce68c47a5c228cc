"""Hypothesis properties for `lictor.log`.

* Random trees (up to 4,096 leaves): roots, inclusion and consistency proofs
  read through a `HashReader` equal a naive RFC 6962 §2.1 implementation
  (`naive_rfc6962`), verify, and stop verifying under any mutation.
* Random and near-valid inputs to every parser raise only the documented
  `lictor.errors` class, never IndexError, ValueError, UnicodeError, ...
* format -> parse is the identity for checkpoints, tile paths, tlog-proofs,
  entry bundles, notes, keys and entries.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive_rfc6962 import MemoryTree, Naive, path_shape, subproof_shape

from lictor.errors import (
    CheckpointError,
    EntryError,
    KeyFormatError,
    LogError,
    NoteError,
    ProofError,
    TileError,
    TreeError,
)
from lictor.log import checkpoint, cosignature, merkle, note, tiles
from lictor.log.entry import canonical_entry, parse_entry
from lictor.log.proof import TlogProof, parse_tlog_proof

T = TypeVar("T")

TREES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARSERS = settings(max_examples=300, deadline=None)


def only(error: type[Exception] | tuple[type[Exception], ...], call: Callable[[], T]) -> T | None:
    """Run ``call``; the documented ``error`` is fine, anything else fails the test."""
    try:
        return call()
    except error:
        return None


# --- random trees --------------------------------------------------------------------

MAX_LEAVES = 4096
tree_sizes = st.one_of(
    st.integers(1, 80),
    st.integers(1, MAX_LEAVES),
    st.sampled_from([1 << k for k in range(1, 13)]).flatmap(
        lambda p: st.sampled_from([p - 1, p, p + 1])
    ),
)


@st.composite
def trees(draw: st.DrawFn) -> tuple[MemoryTree, Naive]:
    size = draw(tree_sizes)
    salt = draw(st.binary(max_size=8))
    entries = [salt + i.to_bytes(2, "big") for i in range(size)]
    return MemoryTree.of_entries(entries), Naive.of_entries(entries)


@TREES
@given(trees(), st.data())
def test_roots_match_naive(pair: tuple[MemoryTree, Naive], data: st.DataObject) -> None:
    tree, naive = pair
    assert merkle.tree_hash(tree.size, tree) == naive.root(tree.size)
    assert merkle.merkle_root(tree.leaves) == naive.root(tree.size)
    for size in data.draw(st.lists(st.integers(0, tree.size), max_size=8)):
        assert merkle.tree_hash(size, tree) == naive.root(size)
    frontier = merkle.CompactRange()
    for leaf in tree.leaves:
        frontier.append(leaf)
    assert frontier.root() == naive.root(tree.size)
    assert len(tree.stored) == merkle.stored_hash_count(tree.size)


def _flip(proof: list[bytes], data: st.DataObject) -> list[bytes]:
    i = data.draw(st.integers(0, len(proof) - 1))
    j = data.draw(st.integers(0, 31))
    x = data.draw(st.integers(1, 255))
    h = bytearray(proof[i])
    h[j] ^= x
    return [*proof[:i], bytes(h), *proof[i + 1 :]]


def _rejects(verify: Callable[..., object], *args: Any) -> bool:
    """True if ``verify(*args)`` raises `ProofError` (anything else propagates)."""
    try:
        verify(*args)
    except ProofError:
        return True
    return False


@TREES
@given(trees(), st.data())
def test_inclusion_proofs(pair: tuple[MemoryTree, Naive], data: st.DataObject) -> None:
    tree, naive = pair
    size = data.draw(st.integers(1, tree.size), label="size")
    root = naive.root(size)
    for index in data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=6)):
        leaf = tree.leaves[index]
        proof = merkle.prove_inclusion(index, size, tree)
        assert proof == naive.inclusion(index, size)
        merkle.verify_inclusion(index, size, leaf, proof, root)
        assert merkle.root_from_inclusion(index, size, leaf, proof) == root

        verify = merkle.verify_inclusion
        if proof:
            assert _rejects(verify, index, size, leaf, _flip(proof, data), root)
            assert _rejects(verify, index, size, leaf, proof[:-1], root)
        assert _rejects(verify, index, size, leaf, [*proof, leaf], root)
        other = data.draw(st.integers(-2, size + 1))
        other += other >= index  # any index but this one, in range or not
        assert _rejects(verify, other, size, leaf, proof, root)
        if size > 1:
            assert _rejects(verify, index, size, tree.leaves[(index + 1) % size], proof, root)
        assert _rejects(verify, index, size, leaf, proof, _flip([root], data)[0])
        # A proof carries no size: under another size it verifies exactly
        # when RFC 6962's PATH has the same shape there (the signed root is
        # what binds the size).
        new_size = data.draw(st.integers(0, 2 * size + 2).filter(lambda s: s != size))
        same_shape = index < new_size and path_shape(index, new_size) == path_shape(index, size)
        assert _rejects(verify, index, new_size, leaf, proof, root) != same_shape
        # Doubling or halving the size (transparency-dev's mutations) always
        # changes the shape.
        for changed in (size * 2, size // 2):
            if changed != size and index < changed:
                assert path_shape(index, changed) != path_shape(index, size)
                assert _rejects(verify, index, changed, leaf, proof, root)


@TREES
@given(trees(), st.data())
def test_consistency_proofs(pair: tuple[MemoryTree, Naive], data: st.DataObject) -> None:
    tree, naive = pair
    second = data.draw(st.integers(1, tree.size), label="second")
    root2 = naive.root(second)
    for first in data.draw(st.lists(st.integers(1, second), min_size=1, max_size=6)):
        root1 = naive.root(first)
        proof = merkle.prove_consistency(first, second, tree)
        assert proof == naive.consistency(first, second)
        merkle.verify_consistency(first, second, root1, root2, proof)

        verify = merkle.verify_consistency
        if proof:
            assert _rejects(verify, first, second, root1, root2, _flip(proof, data))
            assert _rejects(verify, first, second, root1, root2, proof[:-1])
        assert _rejects(verify, first, second, root1, root2, [*proof, root1])
        assert _rejects(verify, first, second, _flip([root1], data)[0], root2, proof)
        assert _rejects(verify, first, second, root1, _flip([root2], data)[0], proof)
        # Other sizes: accepted exactly when SUBPROOF has the same shape there
        # (never from size 0, by policy).
        new_first = data.draw(st.integers(-1, second + 2))
        new_second = data.draw(st.integers(-1, 2 * second + 2))
        if (new_first, new_second) == (first, second):
            continue
        same_shape = 0 < new_first <= new_second and (
            subproof_shape(new_first, new_second) == subproof_shape(first, second)
        )
        assert _rejects(verify, new_first, new_second, root1, root2, proof) != same_shape


@TREES
@given(trees(), st.data())
def test_tile_reader_matches_stored_hashes(
    pair: tuple[MemoryTree, Naive], data: st.DataObject
) -> None:
    tree, naive = pair
    size = tree.size
    bodies = {
        t.path: b"".join(tree.read_hashes(t.hash_indexes())) for t in tiles.tiles_for_size(size)
    }
    reader = tiles.TileHashReader(size, lambda tile: bodies[tile.path])
    assert merkle.tree_hash(size, reader) == naive.root(size)
    index = data.draw(st.integers(0, size - 1))
    assert merkle.prove_inclusion(index, size, reader) == naive.inclusion(index, size)
    first = data.draw(st.integers(1, size))
    assert merkle.prove_consistency(first, size, reader) == naive.consistency(first, size)


@st.composite
def nodes(draw: st.DrawFn) -> tuple[int, int]:
    """(level, n) of a complete subtree in a tree of at most `MAX_TREE_SIZE` leaves."""
    level = draw(st.integers(0, 62))
    last = (merkle.MAX_TREE_SIZE >> level) - 1
    return level, draw(st.one_of(st.integers(0, min(last, 2**40)), st.integers(0, last)))


@settings(max_examples=200, deadline=None)
@given(nodes())
def test_stored_hash_index_round_trip(node: tuple[int, int]) -> None:
    level, n = node
    index = merkle.stored_hash_index(level, n)
    assert merkle.split_stored_hash_index(index) == (level, n)
    if level == 0:
        # Leaf n is stored right after everything the first n leaves store.
        assert merkle.stored_hash_count(n) == index


@PARSERS
@given(
    st.integers(-(2**64), 2**64),
    st.integers(-(2**64), 2**64),
    st.lists(st.binary(min_size=30, max_size=34), max_size=70),
    st.binary(min_size=31, max_size=33),
    st.binary(min_size=31, max_size=33),
)
def test_verifiers_only_raise_proof_errors(
    a: int, b: int, proof: list[bytes], h1: bytes, h2: bytes
) -> None:
    only(ProofError, lambda: merkle.verify_inclusion(a, b, h1, proof, h2))
    only(ProofError, lambda: merkle.root_from_inclusion(a, b, h1, proof))
    only(ProofError, lambda: merkle.verify_consistency(a, b, h1, h2, proof))


# --- notes and keys ------------------------------------------------------------------

key_names = st.text(
    st.characters(exclude_categories=("C", "Z"), exclude_characters="+"), min_size=1, max_size=20
)
note_texts = st.text(
    st.one_of(st.characters(exclude_categories=("Cc", "Cs")), st.just("\n")), max_size=200
).map(lambda text: text + "\n")
seeds = st.binary(min_size=32, max_size=32)
B64 = string.ascii_letters + string.digits + "+/="


@PARSERS
@given(st.binary(max_size=400))
def test_parse_note_random_bytes(data: bytes) -> None:
    only(NoteError, lambda: note.parse_note(data))


near_notes = st.builds(
    lambda text, lines: (text + "\n" + "".join(lines)).encode(),
    st.text(max_size=60),
    st.lists(
        st.builds(
            lambda prefix, name, sep, b64, end: prefix + name + sep + b64 + end,
            st.sampled_from(["— ", "—", "- ", "", "— — "]),
            st.text(max_size=12),
            st.sampled_from([" ", "", "  ", "\t"]),
            st.text(B64, max_size=100),
            st.sampled_from(["\n", "", "\n\n", "\r\n"]),
        ),
        max_size=5,
    ),
)


@PARSERS
@given(near_notes)
def test_parse_and_open_near_notes(data: bytes) -> None:
    parsed = only(NoteError, lambda: note.parse_note(data))
    verifier = note.Ed25519Signer("n", bytes(32)).verifier
    opened = only(NoteError, lambda: note.open_note(data, [verifier]))
    assert opened is None or parsed is not None


@PARSERS
@given(st.text(max_size=120))
def test_key_parsers_random_text(text: str) -> None:
    only(KeyFormatError, lambda: note.parse_verifier_key(text))
    only(KeyFormatError, lambda: note.parse_signer_key(text))


near_vkeys = st.builds(
    lambda name, hex_id, key_type, key: (
        f"{name}+{hex_id}+" + base64.b64encode(bytes([key_type]) + key).decode()
    ),
    st.text(max_size=12),
    st.one_of(st.text("0123456789abcdefABCDEF", max_size=9), st.text(max_size=9)),
    st.sampled_from([0x01, 0x02, 0x04, 0x05, 0x06, 0xFF]),
    st.one_of(
        st.binary(min_size=31, max_size=33),
        st.binary(max_size=100),
        st.binary(max_size=80).map(lambda b: b"\x30\x59\x30\x13\x06\x07" + b),
    ),
)


@PARSERS
@given(near_vkeys)
def test_key_parsers_near_keys(vkey: str) -> None:
    only(KeyFormatError, lambda: note.parse_verifier_key(vkey))
    only(KeyFormatError, lambda: note.parse_signer_key("PRIVATE+KEY+" + vkey))


@settings(max_examples=60, deadline=None)
@given(key_names, seeds)
def test_key_round_trip(name: str, seed: bytes) -> None:
    signer = note.Ed25519Signer(name, seed)
    assert note.parse_signer_key(signer.skey()).skey() == signer.skey()
    verifier = note.parse_verifier_key(signer.verifier.vkey())
    assert (verifier.name, verifier.key_id) == (name, signer.key_id)
    cosigner = cosignature.Cosigner(name, seed, 0).verifier
    parsed = note.parse_verifier_key(cosigner.vkey())
    assert isinstance(parsed, cosignature.CosignatureVerifier)
    assert (parsed.name, parsed.key_id) == (name, cosigner.key_id)


@settings(max_examples=60, deadline=None)
@given(note_texts, st.lists(st.tuples(key_names, seeds), min_size=1, max_size=3))
def test_note_sign_parse_open_round_trip(text: str, keys: list[tuple[str, bytes]]) -> None:
    signers = [note.Ed25519Signer(name, seed) for name, seed in keys]
    signed = note.sign_note(text, signers)
    parsed = note.parse_note(signed)
    assert parsed.text == text
    assert parsed.encode() == signed
    assert [(s.name, s.key_id) for s in parsed.signatures] == [(s.name, s.key_id) for s in signers]
    opened = note.open_note(signed, [s.verifier for s in signers])
    assert opened.text == text and opened.unverified == ()
    assert len(opened.verified) == len(set(parsed.signatures))


@PARSERS
@given(
    note_texts,
    st.lists(
        st.builds(note.Signature, key_names, st.integers(0, 2**32 - 1), st.binary(min_size=1)),
        min_size=1,
        max_size=5,
    ),
)
def test_note_encode_parse_round_trip(text: str, sigs: list[note.Signature]) -> None:
    encoded = note.Note(text, tuple(sigs)).encode()
    assert note.parse_note(encoded) == note.Note(text, tuple(sigs))


# --- checkpoints --------------------------------------------------------------------

origins = st.text(min_size=1, max_size=40).filter(lambda o: "\n" not in o and o == o.strip())
extensions = st.lists(st.text(min_size=1, max_size=20).filter(lambda e: "\n" not in e), max_size=3)
roots = st.binary(min_size=32, max_size=32)


@PARSERS
@given(origins, st.integers(0, merkle.MAX_TREE_SIZE), roots, extensions)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    cp = checkpoint.Checkpoint(origin, size, root, tuple(ext))
    assert checkpoint.parse_checkpoint(cp.text()) == cp


@PARSERS
@given(st.text(max_size=200))
def test_parse_checkpoint_random_text(text: str) -> None:
    only(CheckpointError, lambda: checkpoint.parse_checkpoint(text))


near_checkpoints = st.builds(
    lambda lines, end: "\n".join(lines) + end,
    st.lists(
        st.one_of(
            st.text(max_size=20),
            st.integers(-5, 2**64).map(str),
            st.text("0123456789", max_size=21),
            st.binary(min_size=30, max_size=34).map(lambda b: base64.b64encode(b).decode()),
            st.text(B64, max_size=46),
        ),
        max_size=6,
    ),
    st.sampled_from(["\n", "", "\n\n"]),
)


@PARSERS
@given(near_checkpoints)
def test_parse_checkpoint_near_checkpoints(text: str) -> None:
    only(CheckpointError, lambda: checkpoint.parse_checkpoint(text))


SIGNER = note.Ed25519Signer("example.com/log", bytes(32))


@PARSERS
@given(st.one_of(st.binary(max_size=300), near_notes))
def test_open_checkpoint_random_notes(data: bytes) -> None:
    only((NoteError, CheckpointError), lambda: checkpoint.open_checkpoint(data, [SIGNER.verifier]))


@PARSERS
@given(near_checkpoints)
def test_open_checkpoint_signed_near_checkpoints(text: str) -> None:
    signed = only(NoteError, lambda: note.sign_note(text, [SIGNER]))
    if signed is None:
        return
    # The signature verifies, so only the checkpoint body can be wrong.
    opened = only(CheckpointError, lambda: checkpoint.open_checkpoint(signed, [SIGNER.verifier]))
    assert opened is None or opened[0].text() == text


# --- tlog-proofs ------------------------------------------------------------------------

hashes32 = st.lists(st.binary(min_size=32, max_size=32), max_size=63)


@PARSERS
@given(
    st.integers(0, 2**64 - 1),
    hashes32,
    st.text(min_size=1, max_size=80),
    st.one_of(st.none(), st.binary(max_size=40)),
)
def test_tlog_proof_round_trip(
    index: int, hashes: list[bytes], cp: str, extra: bytes | None
) -> None:
    proof = TlogProof(index, tuple(hashes), cp.encode(), extra)
    assert parse_tlog_proof(proof.encode()) == proof


near_proofs = st.builds(
    lambda header, lines, sep, rest: "\n".join([header, *lines]) + sep + rest,
    st.sampled_from(["c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", "", "c2sp.org"]),
    st.lists(
        st.one_of(
            st.builds(
                lambda n: f"index {n}", st.one_of(st.integers(-3, 2**65), st.text(max_size=5))
            ),
            st.builds(lambda t: f"extra {t}", st.text(B64 + "!", max_size=12)),
            st.binary(min_size=30, max_size=34).map(lambda b: base64.b64encode(b).decode()),
            st.text(max_size=10),
        ),
        max_size=6,
    ),
    st.sampled_from(["\n\n", "\n", ""]),
    st.text(max_size=20),
)


@PARSERS
@given(st.one_of(st.text(max_size=200), near_proofs))
def test_parse_tlog_proof_random(text: str) -> None:
    only(ProofError, lambda: parse_tlog_proof(text))


# --- tiles and bundles -------------------------------------------------------------------


@st.composite
def tile_values(draw: st.DrawFn) -> tiles.Tile:
    entries = draw(st.booleans())
    level = 0 if entries else draw(st.integers(0, tiles.MAX_LEVEL))
    index = draw(st.one_of(st.integers(0, 3000), st.integers(0, 2**64 - 1)))
    return tiles.Tile(level, index, draw(st.integers(1, tiles.TILE_WIDTH)), entries)


@PARSERS
@given(tile_values())
def test_tile_path_round_trip(tile: tiles.Tile) -> None:
    assert tiles.parse_tile_path(tile.path) == tile


path_pieces = st.sampled_from(
    [
        *("tile", "entries", "0", "1", "63", "64", "00", "000", "001", "x001", "x000", "999"),
        *(".p", "p", "000.p", "x001.p", "255", "256", "0255", "", "-1", "x", "x1000", "１２３"),
    ]
)


@PARSERS
@given(st.one_of(st.text(max_size=60), st.lists(path_pieces, max_size=10).map("/".join)))
def test_parse_tile_path_random(path: str) -> None:
    tile = only(TileError, lambda: tiles.parse_tile_path(path))
    assert tile is None or tiles.parse_tile_path(tile.path) == tile


@PARSERS
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_bundle_round_trip(entries: list[bytes]) -> None:
    assert tiles.decode_bundle(tiles.encode_bundle(entries)) == entries


@PARSERS
@given(st.binary(max_size=300), st.integers(-1, 300))
def test_tile_bodies_random(data: bytes, width: int) -> None:
    only(TileError, lambda: tiles.decode_bundle(data))
    only(TileError, lambda: tiles.split_hashes(data, width))


@PARSERS
@given(st.integers(-2, 70), st.integers(-2, 2**65), st.integers(-2, 300), st.booleans())
def test_tile_constructor_random(level: int, index: int, width: int, entries: bool) -> None:
    only(TileError, lambda: tiles.Tile(level, index, width, entries))
    only(LogError, lambda: tiles.tile_for(level, index, width, entries))
    text = only(TileError, lambda: tiles.format_index(index))
    assert (text is None) == (index < 0)
    if text is not None and index < 2**64:
        assert tiles.parse_index(text.split("/")) == (index, tiles.TILE_WIDTH)
    elif text is not None:
        with pytest.raises(TileError):  # indexes are uint64
            tiles.parse_index(text.split("/"))


# --- entries ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@PARSERS
@given(json_objects)
def test_entry_round_trip(entry: dict[str, Any]) -> None:
    data = canonical_entry(entry)
    assert parse_entry(data) == entry
    assert canonical_entry(parse_entry(data)) == data


@PARSERS
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: repr(v).encode()),
        st.text(max_size=200).map(str.encode),
    )
)
def test_parse_entry_random(data: bytes) -> None:
    entry = only(EntryError, lambda: parse_entry(data))
    assert entry is None or canonical_entry(entry) == data


@PARSERS
@given(st.one_of(json_values, json_objects))
def test_canonical_entry_random_values(value: Any) -> None:
    data = only(EntryError, lambda: canonical_entry(value))
    assert data is None or (isinstance(value, dict) and parse_entry(data) == value)


@PARSERS
@given(st.integers(0, 2**64), st.data())
def test_provers_reject_out_of_range(size: int, data: st.DataObject) -> None:
    tree = MemoryTree()  # never read: the arguments are checked first
    index = data.draw(st.one_of(st.integers(-5, -1), st.integers(size, size + 5)))
    with pytest.raises(TreeError):
        merkle.prove_inclusion(index, size, tree)
    first = data.draw(st.one_of(st.integers(-5, 0), st.integers(size + 1, size + 5)))
    with pytest.raises(TreeError):
        merkle.prove_consistency(first, size, tree)


absurd_sizes = st.one_of(
    st.integers(merkle.MAX_TREE_SIZE + 1, 2**64 + 5),
    st.integers(min_value=merkle.MAX_TREE_SIZE + 1),
    st.integers(max_value=-1),
    st.integers(63, 5000).map(lambda k: 2**k),
)


class _NeverRead:
    def read_hashes(self, indexes: Any) -> list[bytes]:
        raise AssertionError("arguments must be checked before reading")


@PARSERS
@given(absurd_sizes, st.integers(-5, 5), st.lists(st.binary(min_size=32, max_size=32), max_size=3))
def test_absurd_sizes_fail_fast_with_log_errors(size: int, delta: int, proof: list[bytes]) -> None:
    # Before the size limit, 2**1000 and above raised RecursionError in the provers.
    reader = _NeverRead()
    h = bytes(32)
    with pytest.raises(TreeError):
        merkle.tree_hash(size, reader)
    with pytest.raises(TreeError):
        merkle.prove_inclusion(size + delta, size, reader)
    with pytest.raises(TreeError):
        merkle.prove_consistency(size + delta, size, reader)
    with pytest.raises(ProofError):
        merkle.root_from_inclusion(size + delta, size, h, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size + delta, size, h, h, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(1, size, h, h, proof)
