"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys; no I/O.

A note is UTF-8 text ending in a newline, one blank line, then one or more
signature lines ``— <name> <base64(key id || signature)>``. The text is split
from the signatures at the *last* blank line, and the signed message is the
text including its final newline.

Opening a note follows the spec's rules: signatures from unknown (name, key
id) pairs are ignored; a signature from a known key must verify or the whole
note is rejected; a note with no verified signature is rejected. Malformed
notes raise `NoteError`, bad keys `KeyFormatError`, failed verification
`SignatureError`.

Keys: verifier keys are ``<name>+<hex8 key id>+<base64(type || public key)>``;
signer keys use the common ``PRIVATE+KEY+<name>+<hex8>+<base64(0x01 || seed)>``
form (Go's sumdb/note, Tessera, Sigsum). `parse_verifier_key` reads Ed25519
(0x01) and ECDSA P-256 (0x02, read-only, for Rekor v1 and other CT-era logs)
keys, and any type another module adds with `register_verifier_type`:
`lictor.log.cosignature` adds Ed25519 cosignatures (0x04), and importing
`lictor.log` imports it, so every caller can read witness keys. That module
builds on this one, never the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lictor.errors import KeyFormatError, NoteError, SignatureError
from lictor.log.encoding import b64decode_strict, describe_int

ALG_ED25519 = 0x01
ALG_ECDSA = 0x02
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
SIG_PREFIX = "— "


class Verifier(Protocol):
    """Checks signatures made by one (name, key id)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


class Signer(Protocol):
    """Makes signatures for one (name, key id)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key id and the signature bytes after the id."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = struct.pack(">I", self.key_id) + self.signature
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) note."""

    text: str
    signatures: tuple[Signature, ...]

    def encode(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()


@dataclass(frozen=True)
class OpenedNote:
    """A note whose signatures were checked: who verified, who was unknown."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def is_valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode whitespace, no '+', no control characters."""
    return bool(name) and not any(
        c == "+" or c.isspace() or unicodedata.category(c)[0] in "CZ" for c in name
    )


def key_id(name: str, key_type: int, public: bytes) -> int:
    """The recommended, name-bound key id: SHA-256(name || 0x0A || type || key)[:4]."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _split_key(text: str, parts: int) -> list[str]:
    fields = text.split("+", parts - 1)
    if len(fields) != parts:
        raise KeyFormatError(f"key string has {len(fields)} '+' fields, wanted {parts}")
    return fields


def _parse_key_fields(name: str, hex_id: str, b64: str) -> tuple[int, int, bytes]:
    if not is_valid_key_name(name):
        raise KeyFormatError(f"invalid key name {name!r}")
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise KeyFormatError("key id must be 8 lowercase hex digits")
    blob = b64decode_strict(b64, KeyFormatError, "key is not base64")
    if not blob:
        raise KeyFormatError("empty key")
    return int(hex_id, 16), blob[0], blob[1:]


class NamedEd25519Key:
    """A named Ed25519 public key for one signature type (``key_type``).

    What every Ed25519-based type shares: the checked name and 32-byte key,
    the name-bound key id and the vkey string. Subclasses set ``key_type`` and
    add ``verify``, which decides what the signature bytes cover.
    """

    key_type: ClassVar[int]

    def __init__(self, name: str, public: bytes) -> None:
        if not is_valid_key_name(name):
            raise KeyFormatError(f"invalid key name {name!r}")
        if len(public) != 32:
            raise KeyFormatError("Ed25519 public key must be 32 bytes")
        self._name = name
        self._public = public
        self._key = Ed25519PublicKey.from_public_bytes(public)
        self._key_id = key_id(name, self.key_type, public)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._public

    def vkey(self) -> str:
        body = base64.b64encode(bytes([self.key_type]) + self._public).decode()
        return f"{self._name}+{self._key_id:08x}+{body}"

    def _verify_ed25519(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Ed25519Verifier(NamedEd25519Key):
    """Verifies Ed25519 (0x01) note signatures: 64 bytes over the note text."""

    key_type = ALG_ED25519

    def verify(self, message: bytes, signature: bytes) -> bool:
        return len(signature) == 64 and self._verify_ed25519(message, signature)


class ECDSAVerifier:
    """Verifies ECDSA P-256 (0x02) note signatures; the key id is not name-bound."""

    def __init__(self, name: str, key_id_: int, spki: bytes) -> None:
        try:
            key = serialization.load_der_public_key(spki)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise KeyFormatError("ECDSA key is not a DER public key") from e
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise KeyFormatError("ECDSA key is not a P-256 key")
        if int.from_bytes(hashlib.sha256(spki).digest()[:4], "big") != key_id_:
            raise KeyFormatError("ECDSA key id does not match the key")
        self._name = name
        self._key_id = key_id_
        self._key = key

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


VerifierFactory = Callable[[str, int, bytes], Verifier]
"""Builds a verifier from a vkey's name, key id and public key, or raises `KeyFormatError`."""

_VERIFIER_TYPES: dict[int, VerifierFactory] = {
    ALG_ED25519: lambda name, _kid, public: Ed25519Verifier(name, public),
    ALG_ECDSA: ECDSAVerifier,
}


def register_verifier_type(key_type: int, factory: VerifierFactory) -> None:
    """Let `parse_verifier_key` read keys of ``key_type``, a one-byte type not yet taken."""
    if not 0 <= key_type <= 0xFF:
        raise KeyFormatError(f"key type {describe_int(key_type)} is not one byte")
    if key_type in _VERIFIER_TYPES:
        raise KeyFormatError(f"key type 0x{key_type:02x} is already registered")
    _VERIFIER_TYPES[key_type] = factory


def parse_verifier_key(vkey: str) -> Verifier:
    """Parse a verifier key string of any registered type (see the module docstring)."""
    name, hex_id, b64 = _split_key(vkey.strip(), 3)
    kid, key_type, public = _parse_key_fields(name, hex_id, b64)
    factory = _VERIFIER_TYPES.get(key_type)
    if factory is None:
        raise KeyFormatError(f"unsupported key type 0x{key_type:02x}")
    verifier = factory(name, kid, public)
    if verifier.key_id != kid:
        raise KeyFormatError("key id does not match the key")
    return verifier


class Ed25519Signer:
    """Signs notes with an Ed25519 key (0x01)."""

    def __init__(self, name: str, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyFormatError("Ed25519 seed must be 32 bytes")
        self._seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes_raw()
        self._verifier = Ed25519Verifier(name, public)

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(name, seed)

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    @property
    def verifier(self) -> Ed25519Verifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def skey(self) -> str:
        body = base64.b64encode(bytes([ALG_ED25519]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{body}"


def parse_signer_key(skey: str) -> Ed25519Signer:
    """Parse ``PRIVATE+KEY+<name>+<hex8>+<base64(0x01 || seed)>``."""
    fields = _split_key(skey.strip(), 5)
    if fields[:2] != ["PRIVATE", "KEY"]:
        raise KeyFormatError("signer key must start with PRIVATE+KEY+")
    kid, key_type, seed = _parse_key_fields(fields[2], fields[3], fields[4])
    if key_type != ALG_ED25519:
        raise KeyFormatError(f"unsupported signer key type 0x{key_type:02x}")
    signer = Ed25519Signer(fields[2], seed)
    if signer.key_id != kid:
        raise KeyFormatError("key id does not match the key")
    return signer


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """Sign ``text`` (which must end in a newline) with every signer."""
    _check_text(text)
    if not signers:
        raise NoteError("a note needs at least one signer")
    message = text.encode()
    sigs = tuple(Signature(s.name, s.key_id, s.sign(message)) for s in signers)
    return Note(text, sigs).encode()


# Unicode category Cc (C0, DEL and C1) except the newline; Cs (lone surrogates).
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if _CONTROL_OR_SURROGATE.search(text):
        raise NoteError("note text has a control character or a lone surrogate")


def parse_note(data: bytes) -> Note:
    """Split a note into text and signature lines without verifying anything."""
    try:
        msg = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NoteError("note is not valid UTF-8") from e
    if _CONTROL.search(msg):
        raise NoteError("note has a control character")
    split = msg.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no signature block")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("signature block must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(SIG_PREFIX):
        raise NoteError("signature line must start with '— '")
    name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
    if not sep or not is_valid_key_name(name) or not b64:
        raise NoteError("malformed signature line")
    blob = b64decode_strict(b64, NoteError, "signature is not base64")
    if len(blob) < 5:
        raise NoteError("signature is too short")
    return Signature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def open_note(data: bytes, verifiers: Sequence[Verifier]) -> OpenedNote:
    """Parse and verify a note; see the module docstring for the rules."""
    note = parse_note(data)
    known = {(v.name, v.key_id): v for v in verifiers}
    message = note.text.encode()
    verified: list[Signature] = []
    unverified: list[Signature] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
        elif verifier.verify(message, sig.signature):
            if sig not in verified:
                verified.append(sig)
        else:
            raise SignatureError(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
    if not verified:
        raise SignatureError("note has no verifiable signatures")
    return OpenedNote(note.text, tuple(verified), tuple(unverified))
