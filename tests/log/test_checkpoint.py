"""Unit tests for `lictor.log.checkpoint`: checkpoint bodies and Ed25519 cosignatures."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lictor.errors import CheckpointError, KeyFormatError, NoteError, SignatureError
from lictor.log import checkpoint, note
from lictor.log.checkpoint import Checkpoint, cosignature_message, parse_checkpoint

ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
LOG = note.Ed25519Signer("example.com/log", hashlib.sha256(b"log").digest())
WITNESS_SEED = hashlib.sha256(b"witness").digest()
WITNESS = checkpoint.Cosigner("example.com/witness", WITNESS_SEED, 1_700_000_000)


def test_text_and_parse() -> None:
    cp = Checkpoint("example.com/log", 42, ROOT)
    assert cp.text() == f"example.com/log\n42\n{ROOT_B64}\n"
    assert parse_checkpoint(cp.text()) == cp
    ext = Checkpoint("example.com/log", 0, ROOT, ("ext one", "ext two"))
    assert ext.text().endswith(f"{ROOT_B64}\next one\next two\n")
    assert parse_checkpoint(ext.text()) == ext


def test_legacy_origins_with_spaces_are_accepted() -> None:
    text = f"rekor.sigstore.dev - 2605736670972794746\n7\n{ROOT_B64}\n"
    assert parse_checkpoint(text).origin == "rekor.sigstore.dev - 2605736670972794746"


def test_size_bounds() -> None:
    assert parse_checkpoint(f"o\n0\n{ROOT_B64}\n").size == 0
    top = f"o\n{2**63 - 1}\n{ROOT_B64}\n"
    assert parse_checkpoint(top).size == checkpoint.MAX_TREE_SIZE == 2**63 - 1
    with pytest.raises(CheckpointError):
        parse_checkpoint(f"o\n{2**63}\n{ROOT_B64}\n")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        f"o\n1\n{ROOT_B64}",
        "o\n1\n",
        f"o\n{ROOT_B64}\n",
        f"\n1\n{ROOT_B64}\n",
        f" o\n1\n{ROOT_B64}\n",
        f"o \n1\n{ROOT_B64}\n",
        f"o\n01\n{ROOT_B64}\n",
        f"o\n00\n{ROOT_B64}\n",
        f"o\n+1\n{ROOT_B64}\n",
        f"o\n-1\n{ROOT_B64}\n",
        f"o\n 1\n{ROOT_B64}\n",
        f"o\n1 \n{ROOT_B64}\n",
        f"o\n1.0\n{ROOT_B64}\n",
        f"o\n0x1\n{ROOT_B64}\n",
        f"o\n١\n{ROOT_B64}\n",
        f"o\n\n{ROOT_B64}\n",
        f"o\n{'9' * 20}\n{ROOT_B64}\n",
        f"o\n1\n{ROOT_B64[:-1]}\n",
        f"o\n1\n{ROOT_B64} \n",
        f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"o\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",
        "o\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n",
        "o\n1\n\n",
        f"o\n1\n{ROOT_B64}\n\n",
        f"o\n1\n{ROOT_B64}\next\n\n",
        f"o\n1\n{ROOT_B64}\n\next\n",
        f"o\r\n1\n{ROOT_B64}\n",
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    "args",
    [
        ("", 1, ROOT, ()),
        (" o", 1, ROOT, ()),
        ("o\nx", 1, ROOT, ()),
        ("o", -1, ROOT, ()),
        ("o", 2**63, ROOT, ()),
        ("o", 1, ROOT[:31], ()),
        ("o", 1, ROOT + b"\x00", ()),
        ("o", 1, ROOT, ("",)),
        ("o", 1, ROOT, ("a\nb",)),
    ],
)
def test_checkpoint_constructor_validates(args: tuple[str, int, bytes, tuple[str, ...]]) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(*args)


def test_open_checkpoint() -> None:
    cp = Checkpoint("example.com/log", 5, ROOT)
    signed = note.sign_note(cp.text(), [LOG])
    parsed, opened = checkpoint.open_checkpoint(signed, [LOG.verifier])
    assert parsed == cp and opened.text == cp.text()
    assert checkpoint.open_checkpoint(signed, [LOG.verifier], origin="example.com/log")[0] == cp
    with pytest.raises(CheckpointError, match="origin"):
        checkpoint.open_checkpoint(signed, [LOG.verifier], origin="example.com/other")
    with pytest.raises(SignatureError):
        checkpoint.open_checkpoint(signed, [WITNESS.verifier])
    not_a_checkpoint = note.sign_note("just text\n", [LOG])
    with pytest.raises(CheckpointError):
        checkpoint.open_checkpoint(not_a_checkpoint, [LOG.verifier])
    with pytest.raises(NoteError):
        checkpoint.open_checkpoint(cp.text().encode(), [LOG.verifier])


# --- cosignatures ---------------------------------------------------------------------


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
    assert checkpoint.cosignature_time(cosig) == 1_700_000_000
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
    assert isinstance(parsed, checkpoint.CosignatureVerifier)
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
        checkpoint.cosignature_time(note.Signature("n", 1, bytes(64)))


@pytest.mark.parametrize("seconds", [-1, 1 << 63, 1 << 64])
def test_cosigner_rejects_out_of_range_time(seconds: int) -> None:
    with pytest.raises(CheckpointError):
        checkpoint.Cosigner("w", WITNESS_SEED, seconds)


def test_cosigner_rejects_bad_keys() -> None:
    with pytest.raises(KeyFormatError):
        checkpoint.Cosigner("w", WITNESS_SEED[:31], 0)
    with pytest.raises(KeyFormatError):
        checkpoint.Cosigner("bad name", WITNESS_SEED, 0)
    with pytest.raises(KeyFormatError):
        checkpoint.CosignatureVerifier("w", b"\x00" * 31)
    assert (
        checkpoint.Cosigner("w", WITNESS_SEED, (1 << 63) - 1).sign(b"t\n")[:8]
        == b"\x7f" + b"\xff" * 7
    )
