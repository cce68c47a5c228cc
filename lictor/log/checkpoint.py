"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and Ed25519 cosignatures
(c2sp.org/tlog-cosignature, type 0x04); no I/O.

A checkpoint body is three lines, origin, tree size and base64 root hash, then
optional extension lines. Lictor never writes extension lines; it tolerates
them when reading (they are kept in `Checkpoint.extensions`). Parsing is strict
where the spec is: decimal size without leading zeros and below 2**63, a root of
exactly 32 bytes, no empty lines. Origins with spaces (Rekor v1's legacy
``rekor.sigstore.dev - <tree id>``) are accepted because real logs use them.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lictor.errors import CheckpointError, KeyFormatError
from lictor.log.merkle import HASH_SIZE
from lictor.log.note import (
    ALG_COSIGNATURE_V1,
    OpenedNote,
    Signature,
    Verifier,
    is_valid_key_name,
    key_id,
    open_note,
)

MAX_TREE_SIZE = (1 << 63) - 1


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
            raise CheckpointError(f"tree size {self.size} out of range")
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
    if not text.isascii() or not text.isdigit() or (text != "0" and text.startswith("0")):
        raise CheckpointError(f"tree size {text[:40]!r} is not a canonical decimal")
    if len(text) > 19 or int(text) > MAX_TREE_SIZE:
        raise CheckpointError("tree size is too large")
    return int(text)


def _parse_root(text: str) -> bytes:
    try:
        root = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise CheckpointError("root hash is not base64") from e
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


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What an Ed25519 (0x04) cosigner signs for a checkpoint at ``timestamp``."""
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


class CosignatureVerifier:
    """Verifies tlog-cosignature/v1 Ed25519 (0x04) signatures.

    The signature body is ``timestamp (uint64 BE) || ed25519 signature``; the
    message it covers is built by `cosignature_message` from the note text.
    """

    def __init__(self, name: str, public: bytes) -> None:
        if not is_valid_key_name(name):
            raise KeyFormatError(f"invalid key name {name!r}")
        if len(public) != 32:
            raise KeyFormatError("Ed25519 public key must be 32 bytes")
        self._name = name
        self._public = public
        self._key = Ed25519PublicKey.from_public_bytes(public)
        self._key_id = key_id(name, ALG_COSIGNATURE_V1, public)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    def vkey(self) -> str:
        body = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self._public).decode()
        return f"{self._name}+{self._key_id:08x}+{body}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 72:
            return False
        timestamp = struct.unpack(">Q", signature[:8])[0]
        if timestamp >= 1 << 63:
            return False
        try:
            self._key.verify(signature[8:], cosignature_message(message.decode(), timestamp))
        except (InvalidSignature, UnicodeDecodeError):
            return False
        return True


def cosignature_time(signature: Signature) -> int:
    """The timestamp a 0x04 cosignature attests to."""
    if len(signature.signature) != 72:
        raise CheckpointError("not an Ed25519 cosignature")
    return int(struct.unpack(">Q", signature.signature[:8])[0])


class Cosigner:
    """Makes tlog-cosignature/v1 Ed25519 signatures (used by tests and witnesses)."""

    def __init__(self, name: str, seed: bytes, clock_seconds: int) -> None:
        if len(seed) != 32:
            raise KeyFormatError("Ed25519 seed must be 32 bytes")
        if not 0 <= clock_seconds < 1 << 63:
            raise CheckpointError(f"cosignature timestamp {clock_seconds} out of range")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._verifier = CosignatureVerifier(name, self._key.public_key().public_bytes_raw())
        self._time = clock_seconds

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    @property
    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        signed = cosignature_message(message.decode(), self._time)
        return struct.pack(">Q", self._time) + self._key.sign(signed)
