"""C2SP checkpoints (c2sp.org/tlog-checkpoint); no I/O.

A checkpoint body is three lines, origin, tree size and base64 root hash, then
optional extension lines. Lictor never writes extension lines; it tolerates
them when reading (they are kept in `Checkpoint.extensions`). Parsing is strict
where the spec is: decimal size without leading zeros and at most
`MAX_TREE_SIZE` (2**63 - 1, shared with `lictor.log.merkle`), a root of exactly
32 bytes, no empty lines. Origins with spaces (Rekor v1's legacy
``rekor.sigstore.dev - <tree id>``) are accepted because real logs use them.
Cosignatures of checkpoints live in `lictor.log.cosignature`.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from lictor.errors import CheckpointError
from lictor.log.encoding import b64decode_strict, describe_int, parse_canonical_decimal
from lictor.log.merkle import HASH_SIZE, MAX_TREE_SIZE
from lictor.log.note import SIG_PREFIX, Ed25519Signer, OpenedNote, Verifier, open_note


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, size and RFC 6962 root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size {describe_int(self.size)} out of range")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root hash is {len(self.root)} bytes, not {HASH_SIZE}")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise CheckpointError("extension lines must be non-empty single lines")

    def text(self) -> str:
        """The note text of this checkpoint (what gets signed)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(line + "\n" for line in (*lines, *self.extensions))


def _check_origin(origin: str) -> None:
    if not origin or "\n" in origin or origin != origin.strip():
        raise CheckpointError("origin must be a non-empty line without surrounding spaces")


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text (signatures already split off)."""
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs origin, size and root lines")
    origin, size_text, root_text, *extensions = lines
    return Checkpoint(origin, _parse_size(size_text), _parse_root(root_text), tuple(extensions))


def _parse_size(text: str) -> int:
    message = f"tree size {text[:40]!r} is not a canonical decimal at most {MAX_TREE_SIZE}"
    return parse_canonical_decimal(text, MAX_TREE_SIZE, CheckpointError, message)


def _parse_root(text: str) -> bytes:
    root = b64decode_strict(text, CheckpointError, "root hash is not base64")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"root hash is {len(root)} bytes, not {HASH_SIZE}")
    return root


def open_checkpoint(
    data: bytes, verifiers: Sequence[Verifier], origin: str | None = None
) -> tuple[Checkpoint, OpenedNote]:
    """Verify a signed checkpoint note and parse its body.

    ``origin``, when given, must match the checkpoint's origin line.
    """
    opened = open_note(data, verifiers)
    checkpoint = parse_checkpoint(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint, opened


class CheckpointSigner:
    """Signs the checkpoints of one log, as a committer does after every batch.

    ``sign(size, root)`` is ``sign_note(Checkpoint(origin, size, root).text(),
    [signer]).encode()``'s bytes exactly, with what never changes between
    checkpoints checked and built once (the origin, the signature line's name
    and key id), not per checkpoint.
    """

    def __init__(self, signer: Ed25519Signer) -> None:
        _check_origin(signer.name)
        self._signer = signer
        self._origin = signer.name + "\n"
        self._line = f"{SIG_PREFIX}{signer.name} ".encode()
        self._key_id = struct.pack(">I", signer.key_id)

    def sign(self, size: int, root: bytes) -> bytes:
        if not 0 <= size <= MAX_TREE_SIZE or len(root) != HASH_SIZE:
            raise CheckpointError(f"no checkpoint of size {describe_int(size)} and that root")
        text = f"{self._origin}{size}\n{base64.b64encode(root).decode()}\n".encode()
        signature = base64.b64encode(self._key_id + self._signer.sign(text))
        return b"".join((text, b"\n", self._line, signature, b"\n"))
