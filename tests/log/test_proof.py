"""Unit tests for `lictor.log.proof` (c2sp.org/tlog-proof) against a signed in-memory log."""

from __future__ import annotations

import base64
import hashlib

import pytest
from naive_rfc6962 import MemoryTree

from lictor.errors import CheckpointError, ProofError, SignatureError
from lictor.log import merkle, note
from lictor.log.checkpoint import Checkpoint
from lictor.log.proof import TlogProof, parse_tlog_proof, verify_tlog_proof

ORIGIN = "example.com/proof-log"
LOG = note.Ed25519Signer(ORIGIN, hashlib.sha256(b"proof log").digest())
ENTRIES = [f"entry {i}".encode() for i in range(21)]
TREE = MemoryTree.of_entries(ENTRIES)
SIZE = len(ENTRIES)
SIGNED = note.sign_note(Checkpoint(ORIGIN, SIZE, merkle.tree_hash(SIZE, TREE)).text(), [LOG])
H = base64.b64encode(hashlib.sha256(b"h").digest()).decode()
CP = SIGNED.decode()


def _proof(index: int, extra: bytes | None = None) -> TlogProof:
    hashes = tuple(merkle.prove_inclusion(index, SIZE, TREE))
    return TlogProof(index, hashes, SIGNED, extra)


def test_encode_layout() -> None:
    proof = _proof(5, b"extra data")
    text = proof.encode()
    lines = text.split("\n")
    assert lines[:3] == ["c2sp.org/tlog-proof@v1", "extra ZXh0cmEgZGF0YQ==", "index 5"]
    n = len(proof.hashes)
    assert n == 5
    assert lines[3 : 3 + n] == [base64.b64encode(h).decode() for h in proof.hashes]
    assert lines[3 + n] == ""
    assert text.endswith("\n\n" + CP)
    assert _proof(0).encode().startswith("c2sp.org/tlog-proof@v1\nindex 0\n")


def test_every_index_round_trips_and_verifies() -> None:
    for index, entry in enumerate(ENTRIES):
        proof = parse_tlog_proof(_proof(index).encode())
        assert proof == _proof(index)
        cp, opened = verify_tlog_proof(proof, entry, [LOG.verifier], origin=ORIGIN)
        assert (cp.origin, cp.size) == (ORIGIN, SIZE)
        assert [s.name for s in opened.verified] == [ORIGIN]


def test_verification_failures() -> None:
    proof = _proof(7)
    with pytest.raises(ProofError):
        verify_tlog_proof(proof, ENTRIES[8], [LOG.verifier])
    with pytest.raises(ProofError):
        verify_tlog_proof(TlogProof(8, proof.hashes, SIGNED), ENTRIES[7], [LOG.verifier])
    with pytest.raises(ProofError):
        verify_tlog_proof(TlogProof(SIZE, proof.hashes, SIGNED), ENTRIES[7], [LOG.verifier])
    with pytest.raises(ProofError):
        verify_tlog_proof(TlogProof(7, proof.hashes[:-1], SIGNED), ENTRIES[7], [LOG.verifier])
    other = note.Ed25519Signer(ORIGIN, hashlib.sha256(b"other").digest())
    with pytest.raises(SignatureError):
        verify_tlog_proof(proof, ENTRIES[7], [other.verifier])
    with pytest.raises(CheckpointError):
        verify_tlog_proof(proof, ENTRIES[7], [LOG.verifier], origin="example.com/else")


@pytest.mark.parametrize(
    "text",
    [
        "",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{H}\n",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{H}\n\n",
        f"c2sp.org/tlog-proof@v2\nindex 0\n\n{CP}",
        f"c2sp.org/tlog-proof@v1 \nindex 0\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\r\nindex 0\n\n{CP}",
        f"\nc2sp.org/tlog-proof@v1\nindex 0\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nextra \nextra \nindex 0\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\nextra AA==\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nextra A\nindex 0\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex \n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex 01\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex +1\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex 1 \n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex ١\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex {2**64}\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex  0\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{H[:-1]}\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{base64.b64encode(bytes(31)).decode()}\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{base64.b64encode(bytes(33)).decode()}\n\n{CP}",
        f"c2sp.org/tlog-proof@v1\nindex 0\n{H} \n\n{CP}",
        "c2sp.org/tlog-proof@v1\nindex 0\n" + f"{H}\n" * 64 + f"\n{CP}",
    ],
)
def test_malformed_proofs(text: str) -> None:
    with pytest.raises(ProofError):
        parse_tlog_proof(text)


def test_limits() -> None:
    top = parse_tlog_proof(f"c2sp.org/tlog-proof@v1\nindex {2**64 - 1}\n\n{CP}")
    assert top.index == 2**64 - 1
    longest = parse_tlog_proof("c2sp.org/tlog-proof@v1\nindex 0\n" + f"{H}\n" * 63 + f"\n{CP}")
    assert len(longest.hashes) == 63
    empty_extra = parse_tlog_proof(f"c2sp.org/tlog-proof@v1\nextra \nindex 0\n\n{CP}")
    assert empty_extra.extra == b""


def test_long_index_and_top_index() -> None:
    with pytest.raises(ProofError, match="not a valid uint64"):
        parse_tlog_proof(f"c2sp.org/tlog-proof@v1\nindex {'9' * 100_000}\n\n{CP}")
    top = parse_tlog_proof(f"c2sp.org/tlog-proof@v1\nindex {2**64 - 1}\n\n{CP}")
    with pytest.raises(ProofError, match="out of range"):
        verify_tlog_proof(top, ENTRIES[0], [LOG.verifier])
