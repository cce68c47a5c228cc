"""c2sp.org/tlog-proof: offline, self-contained inclusion proofs; no I/O.

    c2sp.org/tlog-proof@v1
    [extra <base64>]
    index <n>
    <base64 hash>            zero or more, leaf sibling first
                             (empty line)
    <signed checkpoint note, verbatim>

The entry itself is not part of the proof: the verifier brings it (Lictor's
receipts carry it beside the proof text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lictor.errors import ProofError
from lictor.log.checkpoint import Checkpoint, open_checkpoint
from lictor.log.encoding import b64decode_strict, b64encode, parse_canonical_decimal
from lictor.log.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from lictor.log.note import OpenedNote, Verifier

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 63
MAX_INDEX = (1 << 64) - 1


@dataclass(frozen=True)
class TlogProof:
    """An index, its inclusion path and the signed checkpoint it leads to."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def encode(self) -> str:
        path = [b64encode(h) for h in self.hashes]
        return tlog_proof_text(self.index, path, self.checkpoint.decode(), self.extra)


def tlog_proof_text(
    index: int, path: Sequence[str], checkpoint: str, extra: bytes | None = None
) -> str:
    """tlog-proof text from its parts, the path's hashes already in base64 (a receipt
    shows them in both spellings and encodes each once)."""
    lines = [HEADER]
    if extra is not None:
        lines.append("extra " + b64encode(extra))
    lines.append(f"index {index}")
    lines += path
    return "\n".join(lines) + "\n\n" + checkpoint


def parse_tlog_proof(text: str) -> TlogProof:
    """Parse tlog-proof text; anything malformed is a `ProofError`."""
    head, sep, checkpoint = text.partition("\n\n")
    if not sep or not checkpoint:
        raise ProofError("tlog-proof has no checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise ProofError("missing expected header c2sp.org/tlog-proof@v1")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = b64decode_strict(
            lines[pos].removeprefix("extra "), ProofError, "extra data not base64 encoded"
        )
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise ProofError("missing required index")
    index = _parse_index(lines[pos][len("index ") :])
    hashes = tuple(_parse_hash(line) for line in lines[pos + 1 :])
    if len(hashes) > MAX_PROOF_HASHES:
        raise ProofError("inclusion proof is too long")
    return TlogProof(index, hashes, checkpoint.encode(), extra)


def _parse_index(text: str) -> int:
    message = f"index {text[:30]!r} is not a valid uint64"  # wording from transparency-dev
    return parse_canonical_decimal(text, MAX_INDEX, ProofError, message)


def _parse_hash(line: str) -> bytes:
    h = b64decode_strict(line, ProofError, "hash not base64 encoded")
    if len(h) != HASH_SIZE:
        raise ProofError(f"proof hash is {len(h)} bytes, not {HASH_SIZE}")
    return h


def verify_tlog_proof(
    proof: TlogProof, entry: bytes, verifiers: Sequence[Verifier], origin: str | None = None
) -> tuple[Checkpoint, OpenedNote]:
    """Check the checkpoint's signatures and the entry's inclusion in it."""
    checkpoint, opened = open_checkpoint(proof.checkpoint, verifiers, origin)
    verify_inclusion(proof.index, checkpoint.size, leaf_hash(entry), proof.hashes, checkpoint.root)
    return checkpoint, opened
