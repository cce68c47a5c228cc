"""Ed25519 checkpoint cosignatures (c2sp.org/tlog-cosignature v1, type 0x04); no I/O, no clock.

A cosignature is a signed-note signature line whose body is ``timestamp
(uint64 BE, seconds, < 2**63) || Ed25519 signature``. The signature covers
`cosignature_message`: ``cosignature/v1``, the timestamp and the checkpoint
note text verbatim, extension lines included. Its key id is name-bound with
type 0x04, so the same Ed25519 key used as a log key (0x01) gets another id
and neither signature passes for the other.

This module builds on `lictor.log.note` and registers the 0x04 type with it,
so `lictor.log.note.parse_verifier_key` returns a `CosignatureVerifier` for
witness keys. Timestamps are passed in: `Cosigner` never reads a clock.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lictor.errors import CheckpointError, KeyFormatError
from lictor.log.encoding import describe_int
from lictor.log.note import ALG_COSIGNATURE_V1, NamedEd25519Key, Signature, register_verifier_type

MAX_TIMESTAMP = (1 << 63) - 1
SIGNATURE_SIZE = 8 + 64


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What an Ed25519 (0x04) cosigner signs for a checkpoint at ``timestamp``."""
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


class CosignatureVerifier(NamedEd25519Key):
    """Verifies tlog-cosignature/v1 Ed25519 (0x04) signatures.

    ``verify`` gets the note text as ``message`` and rebuilds the signed
    `cosignature_message` from it and the timestamp in the signature body.
    """

    key_type = ALG_COSIGNATURE_V1

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        try:
            signed = cosignature_message(message.decode(), timestamp)
        except UnicodeDecodeError:
            return False
        return self._verify_ed25519(signed, signature[8:])


def cosignature_time(signature: Signature) -> int:
    """The timestamp a 0x04 cosignature attests to."""
    if len(signature.signature) != SIGNATURE_SIZE:
        raise CheckpointError("not an Ed25519 cosignature")
    return int.from_bytes(signature.signature[:8], "big")


class Cosigner:
    """Makes tlog-cosignature/v1 Ed25519 signatures at a fixed time (tests, witnesses)."""

    def __init__(self, name: str, seed: bytes, clock_seconds: int) -> None:
        if len(seed) != 32:
            raise KeyFormatError("Ed25519 seed must be 32 bytes")
        if not 0 <= clock_seconds <= MAX_TIMESTAMP:
            raise CheckpointError(
                f"cosignature timestamp {describe_int(clock_seconds)} out of range"
            )
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


register_verifier_type(
    ALG_COSIGNATURE_V1, lambda name, _kid, public: CosignatureVerifier(name, public)
)
