"""Unit tests for `lictor.log.note`: key strings, signing, parsing and opening notes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from lictor.errors import KeyFormatError, NoteError, SignatureError
from lictor.log import note

ALICE = note.Ed25519Signer("example.com/alice", hashlib.sha256(b"alice").digest())
BOB = note.Ed25519Signer("example.com/bob", hashlib.sha256(b"bob").digest())
TEXT = "hello\n\nworld\n"


def _vkey(name: str, key_type: int, public: bytes, kid: int | None = None) -> str:
    if kid is None:
        kid = note.key_id(name, key_type, public)
    return f"{name}+{kid:08x}+{base64.b64encode(bytes([key_type]) + public).decode()}"


def _ecdsa_vkey(name: str, spki: bytes) -> str:
    kid = int.from_bytes(hashlib.sha256(spki).digest()[:4], "big")
    return _vkey(name, note.ALG_ECDSA, spki, kid)


# --- keys ------------------------------------------------------------------------


def test_key_id_is_name_bound() -> None:
    public = ALICE.verifier.public_key
    digest = hashlib.sha256(b"example.com/alice\n\x01" + public).digest()
    assert ALICE.key_id == int.from_bytes(digest[:4], "big")
    assert note.key_id("example.com/alice2", 1, public) != ALICE.key_id
    assert note.key_id("example.com/alice", 4, public) != ALICE.key_id


def test_vkey_and_skey_round_trip() -> None:
    vkey, skey = ALICE.verifier.vkey(), ALICE.skey()
    assert vkey.startswith(f"example.com/alice+{ALICE.key_id:08x}+")
    assert len(vkey.split("+", 2)[2]) == 44
    assert skey.startswith("PRIVATE+KEY+example.com/alice+")
    verifier = note.parse_verifier_key(vkey)
    assert isinstance(verifier, note.Ed25519Verifier)
    assert (verifier.name, verifier.key_id) == (ALICE.name, ALICE.key_id)
    assert verifier.vkey() == vkey
    signer = note.parse_signer_key(skey)
    assert signer.skey() == skey and signer.verifier.vkey() == vkey
    # Surrounding whitespace (a key file's newline) is ignored.
    padded = note.parse_verifier_key(f"  {vkey}\n")
    assert isinstance(padded, note.Ed25519Verifier) and padded.vkey() == vkey


def test_generated_signers_differ() -> None:
    a, b = note.Ed25519Signer.generate("n"), note.Ed25519Signer.generate("n")
    assert a.verifier.public_key != b.verifier.public_key
    assert note.parse_signer_key(a.skey()).verifier.vkey() == a.verifier.vkey()


PUB = ALICE.verifier.public_key
GOOD_B64 = base64.b64encode(b"\x01" + PUB).decode()


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "example.com/alice",
        f"example.com/alice+{ALICE.key_id:08x}",
        f"+{note.key_id('', 1, PUB):08x}+{GOOD_B64}",
        _vkey("bad name", 1, PUB),
        _vkey("bad\tname", 1, PUB),
        _vkey("bad\x00name", 1, PUB),
        _vkey("bad\u2003name", 1, PUB),
        f"example.com/alice+{ALICE.key_id:08X}+{GOOD_B64}",
        f"example.com/alice+{ALICE.key_id:08x}"[:-1] + f"+{GOOD_B64}",
        f"example.com/alice+0x{ALICE.key_id:06x}+{GOOD_B64}",
        f"example.com/alice+{ALICE.key_id:08x}+{GOOD_B64[:-1]}",
        f"example.com/alice+{ALICE.key_id:08x}+!{GOOD_B64[1:]}",
        f"example.com/alice+{ALICE.key_id:08x}+",
        f"example.com/alice+{ALICE.key_id ^ 1:08x}+{GOOD_B64}",
        _vkey("example.com/alice", 1, PUB[:31]),
        _vkey("example.com/alice", 1, PUB + b"\x00"),
        _vkey("example.com/alice", 3, PUB),
        _vkey("example.com/alice", 5, PUB),
        _vkey("example.com/alice", 0xFF, PUB),
        _vkey("example.com/alice", 4, PUB[:16]),
        _ecdsa_vkey("ecdsa", b"not DER"),
        _vkey("ecdsa", 2, b"\x30\x00", 0),
    ],
)
def test_invalid_verifier_keys(vkey: str) -> None:
    with pytest.raises(KeyFormatError):
        note.parse_verifier_key(vkey)


def _spki(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_ecdsa_verifier_keys() -> None:
    private = ec.derive_private_key(12345, ec.SECP256R1())
    spki = _spki(private.public_key())
    verifier = note.parse_verifier_key(_ecdsa_vkey("rekor.example", spki))
    assert isinstance(verifier, note.ECDSAVerifier)
    # The ECDSA key ID is SHA-256(SPKI)[:4], not bound to the name.
    assert verifier.key_id == int.from_bytes(hashlib.sha256(spki).digest()[:4], "big")
    assert verifier.key_id != note.key_id("rekor.example", note.ALG_ECDSA, spki)
    message = b"Rekor\n1\nAAAA\n"
    signature = private.sign(message, ec.ECDSA(hashes.SHA256()))
    assert verifier.verify(message, signature)
    assert not verifier.verify(message + b"x", signature)
    assert not verifier.verify(message, b"\x30\x06\x02\x01\x01\x02\x01\x01")
    assert not verifier.verify(message, b"garbage")
    with pytest.raises(KeyFormatError, match="does not match"):
        note.ECDSAVerifier("rekor.example", verifier.key_id ^ 1, spki)
    ed_spki = _spki(ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(KeyFormatError, match="not a P-256 key"):
        note.parse_verifier_key(_ecdsa_vkey("ed", ed_spki))
    p384_spki = _spki(ec.derive_private_key(5, ec.SECP384R1()).public_key())
    with pytest.raises(KeyFormatError, match="not a P-256 key"):
        note.parse_verifier_key(_ecdsa_vkey("p384", p384_spki))


def test_ecdsa_key_on_an_unsupported_curve_is_a_key_error() -> None:
    spki = _spki(ec.derive_private_key(7, ec.SECP256R1()).public_key())
    p256 = bytes.fromhex("06082a8648ce3d030107")  # OID 1.2.840.10045.3.1.7
    prime192v2 = bytes.fromhex("06082a8648ce3d030102")  # not supported by OpenSSL
    assert p256 in spki
    with pytest.raises(KeyFormatError):
        note.parse_verifier_key(_ecdsa_vkey("odd", spki.replace(p256, prime192v2)))


@pytest.mark.parametrize(
    "skey",
    [
        ALICE.skey().removeprefix("PRIVATE+"),
        ALICE.skey().replace("PRIVATE+KEY", "PUBLIC+KEY"),
        ALICE.skey().replace("PRIVATE+KEY", "private+key"),
        ALICE.skey().replace(f"+{ALICE.key_id:08x}+", f"+{ALICE.key_id ^ 1:08x}+"),
        ALICE.skey().replace("+example.com/alice+", "+example.com/bob+"),
        "PRIVATE+KEY+n+00000000+" + base64.b64encode(b"\x01" + bytes(31)).decode(),
        "PRIVATE+KEY+n+00000000+" + base64.b64encode(b"\x04" + bytes(32)).decode(),
        "PRIVATE+KEY+bad name+00000000+" + base64.b64encode(b"\x01" + bytes(32)).decode(),
        "PRIVATE+KEY+n+00000000+",
        "PRIVATE+KEY+n+00000000",
    ],
)
def test_invalid_signer_keys(skey: str) -> None:
    with pytest.raises(KeyFormatError):
        note.parse_signer_key(skey)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\nb", "a\u00a0b"])
def test_invalid_key_names(name: str) -> None:
    assert not note.is_valid_key_name(name)
    with pytest.raises(KeyFormatError):
        note.Ed25519Signer(name, bytes(32))
    with pytest.raises(KeyFormatError):
        note.Ed25519Verifier(name, PUB)


def test_valid_key_names() -> None:
    for name in ["a", "example.com/log", "sigsum.org/v1/tree/abc", "é—日本"]:
        assert note.is_valid_key_name(name)


def test_key_material_lengths() -> None:
    with pytest.raises(KeyFormatError):
        note.Ed25519Signer("n", bytes(31))
    with pytest.raises(KeyFormatError):
        note.Ed25519Verifier("n", bytes(33))
    assert not ALICE.verifier.verify(b"m", ALICE.sign(b"m")[:63])
    assert ALICE.verifier.verify(b"m", ALICE.sign(b"m"))


# --- signing and parsing ------------------------------------------------------------


def test_sign_and_parse() -> None:
    signed = note.sign_note(TEXT, [ALICE, BOB])
    assert signed.startswith(TEXT.encode() + b"\n\xe2\x80\x94 example.com/alice ")
    parsed = note.parse_note(signed)
    assert parsed.text == TEXT
    assert [(s.name, s.key_id) for s in parsed.signatures] == [
        (ALICE.name, ALICE.key_id),
        (BOB.name, BOB.key_id),
    ]
    assert parsed.encode() == signed
    line = note.Signature(ALICE.name, ALICE.key_id, ALICE.sign(TEXT.encode())).line()
    assert line.startswith("— example.com/alice ") and line.endswith("\n")
    # An Ed25519 signature line body is 92 base64 characters (68 bytes).
    assert len(line[:-1].split(" ")[2]) == 92


@pytest.mark.parametrize(
    "text", ["no newline", "", "a\rb\n", "tab\there\n", "nul\x00\n", "\ud800\n"]
)
def test_sign_rejects_bad_text(text: str) -> None:
    with pytest.raises(NoteError):
        note.sign_note(text, [ALICE])


def test_sign_needs_a_signer() -> None:
    with pytest.raises(NoteError):
        note.sign_note(TEXT, [])


def test_text_splits_at_the_last_blank_line() -> None:
    signed = note.sign_note("a\n\n\nb\n\n", [ALICE])
    assert note.parse_note(signed).text == "a\n\n\nb\n\n"
    assert note.open_note(signed, [ALICE.verifier]).text == "a\n\n\nb\n\n"


SIG = base64.b64encode(b"\x00\x00\x00\x01" + bytes(64)).decode()


@pytest.mark.parametrize(
    "data",
    [
        b"text\n",
        b"text\n\n",
        f"text\n\n— name {SIG}".encode(),
        f"text\n\n— name {SIG}\n\n".encode(),
        f"text\n\n— name {SIG}\nextra line\n".encode(),
        f"text\n\n- name {SIG}\n".encode(),
        f"text\n\n—name {SIG}\n".encode(),
        b"text\n\n\xe2\x80\x94 name\n",
        b"text\n\n\xe2\x80\x94 name \n",
        f"text\n\n— name  {SIG}\n".encode(),
        f"text\n\n— na+me {SIG}\n".encode(),
        f"text\n\n—  {SIG}\n".encode(),
        b"text\n\n\xe2\x80\x94 name AAAAAA==\n",
        b"text\n\n\xe2\x80\x94 name !!!!\n",
        f"text\n\n— name {SIG[:-2]}\n".encode(),
        f"text\r\n\n— name {SIG}\n".encode(),
        f"te\x7fxt\n\n— name {SIG}\n".encode(),
        f"text\n\n— name {SIG}\n".encode().replace(b"text", b"t\xffxt"),
        f"text\n\n— name {SIG}\n".encode().replace(b"text", b"t\xed\xa0\x80t"),
    ],
)
def test_malformed_notes(data: bytes) -> None:
    with pytest.raises(NoteError) as info:
        note.parse_note(data)
    assert type(info.value) is NoteError


def test_signature_line_limit() -> None:
    lines = [note.Signature(f"k{i}", i, bytes(64)).line() for i in range(101)]
    assert len(note.parse_note(("t\n\n" + "".join(lines[:16])).encode()).signatures) == 16
    assert len(note.parse_note(("t\n\n" + "".join(lines[:100])).encode()).signatures) == 100
    with pytest.raises(NoteError):
        note.parse_note(("t\n\n" + "".join(lines)).encode())


# --- opening ----------------------------------------------------------------------------


def test_open_reports_verified_and_unknown() -> None:
    signed = note.sign_note(TEXT, [ALICE, BOB])
    opened = note.open_note(signed, [ALICE.verifier])
    assert opened.text == TEXT
    assert [s.name for s in opened.verified] == [ALICE.name]
    assert [s.name for s in opened.unverified] == [BOB.name]
    both = note.open_note(signed, [BOB.verifier, ALICE.verifier])
    assert [s.name for s in both.verified] == [ALICE.name, BOB.name]
    assert both.unverified == ()


def test_open_without_a_trusted_signature_fails() -> None:
    signed = note.sign_note(TEXT, [ALICE])
    with pytest.raises(SignatureError):
        note.open_note(signed, [])
    with pytest.raises(SignatureError):
        note.open_note(signed, [BOB.verifier])
    # Same name, other key: the (name, id) pair is unknown, so it is ignored.
    impostor = note.Ed25519Signer(ALICE.name, hashlib.sha256(b"impostor").digest())
    with pytest.raises(SignatureError, match="no verifiable"):
        note.open_note(signed, [impostor.verifier])


def test_a_bad_signature_from_a_known_key_rejects_the_note() -> None:
    parsed = note.parse_note(note.sign_note(TEXT, [ALICE, BOB]))
    bad = note.Signature(BOB.name, BOB.key_id, bytes(64))
    tampered = note.Note(TEXT, (parsed.signatures[0], bad)).encode()
    assert note.open_note(tampered, [ALICE.verifier]).unverified == (bad,)
    with pytest.raises(SignatureError, match=r"example\.com/bob"):
        note.open_note(tampered, [ALICE.verifier, BOB.verifier])
    other_text = note.sign_note("other\n", [ALICE])
    moved = note.Note(TEXT, note.parse_note(other_text).signatures).encode()
    with pytest.raises(SignatureError):
        note.open_note(moved, [ALICE.verifier])


def test_duplicate_signatures_count_once() -> None:
    sig = note.parse_note(note.sign_note(TEXT, [ALICE])).signatures[0]
    opened = note.open_note(note.Note(TEXT, (sig, sig)).encode(), [ALICE.verifier])
    assert opened.verified == (sig,)


@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=40))
def test_text_checks_refuse_exactly_control_characters_and_surrogates(text: str) -> None:
    """The checks match Unicode's categories Cc and Cs, newline aside."""
    import unicodedata

    from lictor.errors import NoteError
    from lictor.log.note import _check_text

    bad = any(c != "\n" and unicodedata.category(c) in ("Cc", "Cs") for c in text)
    try:
        _check_text(text + "\n")
        refused = False
    except NoteError:
        refused = True
    assert refused == bad
