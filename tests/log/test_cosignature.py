"""Unit tests for `lictor.log.cosignature`: Ed25519 (0x04) checkpoint cosignatures."""

from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lictor.errors import CheckpointError, KeyFormatError, SignatureError
from lictor.log import checkpoint, note
from lictor.log.checkpoint import Checkpoint
from lictor.log.cosignature import (
    CosignatureVerifier,
    Cosigner,
    cosignature_message,
    cosignature_time,
)

ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
LOG = note.Ed25519Signer("example.com/log", hashlib.sha256(b"log").digest())
WITNESS_SEED = hashlib.sha256(b"witness").digest()
WITNESS = Cosigner("example.com/witness", WITNESS_SEED, 1_700_000_000)


def test_cosignature_message() -> None:
    text = Checkpoint("example.com/log", 5, ROOT, ("ext",)).text()
    assert cosignature_message(text, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/log\n5\n" + ROOT_B64.encode() + b"\next\n"
    )


def test_cosign_and_verify() -> None:
    text = Checkpoint("example.com/log", 5, ROOT).text()
    signed = note.sign_note(text, [LOG, WITNESS])
    log_sig, cosig = note.parse_note(signed).signatures
    assert len(log_sig.signature) == 64 and len(cosig.signature) == 72
    assert cosignature_time(cosig) == 1_700_000_000
    assert cosig.signature[:8] == struct.pack(">Q", 1_700_000_000)
    public = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED).public_key()
    public.verify(cosig.signature[8:], cosignature_message(text, 1_700_000_000))
    # A cosignature body is 104 base64 characters (76 bytes with the key ID).
    assert len(cosig.line()[:-1].split(" ")[2]) == 104
    _, opened = checkpoint.open_checkpoint(signed, [WITNESS.verifier])
    assert opened.verified == (cosig,) and opened.unverified == (log_sig,)
    _, both = checkpoint.open_checkpoint(signed, [LOG.verifier, WITNESS.verifier])
    assert both.verified == (log_sig, cosig)


def test_cosigner_key_id_and_vkey() -> None:
    verifier = WITNESS.verifier
    public = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED).public_key().public_bytes_raw()
    assert verifier.key_id == note.key_id("example.com/witness", 0x04, public)
    assert verifier.key_id != note.key_id("example.com/witness", 0x01, public)
    vkey = verifier.vkey()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    parsed = note.parse_verifier_key(vkey)
    assert isinstance(parsed, CosignatureVerifier)
    assert (parsed.name, parsed.key_id, parsed.vkey()) == (verifier.name, verifier.key_id, vkey)
    # The same key as a plain Ed25519 log key has another key ID, so its
    # signatures are not mistaken for cosignatures or the other way round.
    as_log = note.Ed25519Signer("example.com/witness", WITNESS_SEED)
    signed = note.sign_note(Checkpoint("o", 1, ROOT).text(), [as_log])
    with pytest.raises(SignatureError):
        checkpoint.open_checkpoint(signed, [verifier])


def test_cosignature_verifier_rejects() -> None:
    text = Checkpoint("example.com/log", 5, ROOT).text().encode()
    body = WITNESS.sign(text)
    verifier = WITNESS.verifier
    assert verifier.verify(text, body)
    assert not verifier.verify(text, body[:71])
    assert not verifier.verify(text, body + b"\x00")
    assert not verifier.verify(text + b"x\n", body)
    later = struct.pack(">Q", 1_700_000_001) + body[8:]
    assert not verifier.verify(text, later)
    assert not verifier.verify(b"\xff\n", body)
    # A timestamp of 2**63 or more is invalid even when the signature is good.
    key = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)
    huge = 1 << 63
    forged = struct.pack(">Q", huge) + key.sign(cosignature_message(text.decode(), huge))
    assert not verifier.verify(text, forged)


def test_cosignature_time_needs_a_cosignature() -> None:
    with pytest.raises(CheckpointError):
        cosignature_time(note.Signature("n", 1, bytes(64)))


@pytest.mark.parametrize("seconds", [-1, 1 << 63, 1 << 64])
def test_cosigner_rejects_out_of_range_time(seconds: int) -> None:
    with pytest.raises(CheckpointError):
        Cosigner("w", WITNESS_SEED, seconds)


def test_cosigner_rejects_bad_keys() -> None:
    with pytest.raises(KeyFormatError):
        Cosigner("w", WITNESS_SEED[:31], 0)
    with pytest.raises(KeyFormatError):
        Cosigner("bad name", WITNESS_SEED, 0)
    with pytest.raises(KeyFormatError):
        CosignatureVerifier("w", b"\x00" * 31)
    assert Cosigner("w", WITNESS_SEED, (1 << 63) - 1).sign(b"t\n")[:8] == b"\x7f" + b"\xff" * 7


def test_log_keys_and_cosigner_keys_share_one_base() -> None:
    public = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED).public_key().public_bytes_raw()
    log_key = note.Ed25519Verifier("example.com/witness", public)
    cosigner_key = CosignatureVerifier("example.com/witness", public)
    for key, key_type in ((log_key, 0x01), (cosigner_key, 0x04)):
        assert isinstance(key, note.NamedEd25519Key)
        assert key.key_type == key_type and key.public_key == public
        assert key.key_id == note.key_id("example.com/witness", key_type, public)
        assert base64.b64decode(key.vkey().split("+", 2)[2]) == bytes([key_type]) + public
    assert cosigner_key.vkey() == WITNESS.verifier.vkey()


def test_note_parses_cosigner_keys_without_importing_this_module() -> None:
    # Audit code reads witness keys with note.parse_verifier_key alone; a fresh
    # interpreter proves that importing lictor.log.note is enough for 0x04.
    code = (
        "from lictor.log.note import parse_verifier_key\n"
        f"v = parse_verifier_key({WITNESS.verifier.vkey()!r})\n"
        "print(type(v).__module__, type(v).__name__, v.key_id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.split() == ["lictor.log.cosignature", "CosignatureVerifier", str(WITNESS.key_id)]


def test_register_verifier_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(note, "_VERIFIER_TYPES", dict(note._VERIFIER_TYPES))  # undone afterwards

    def factory(name: str, _key_id: int, public: bytes) -> note.Verifier:
        return CosignatureVerifier(name, public)  # a made-up type 0xfe that checks like 0x04

    for taken in (0x01, 0x02, 0x04):
        with pytest.raises(KeyFormatError, match="already registered"):
            note.register_verifier_type(taken, factory)
    for invalid in (-1, 256, 2**20_000):
        with pytest.raises(KeyFormatError, match="not one byte"):
            note.register_verifier_type(invalid, factory)
    body = base64.b64encode(b"\xfe" + WITNESS.verifier.public_key).decode()
    vkey = f"{WITNESS.name}+{WITNESS.key_id:08x}+{body}"
    with pytest.raises(KeyFormatError, match="unsupported key type 0xfe"):
        note.parse_verifier_key(vkey)
    note.register_verifier_type(0xFE, factory)
    assert note.parse_verifier_key(vkey).key_id == WITNESS.key_id
