"""The C2SP specification examples (C2SP/C2SP @ 5ba5ee83).

Only the signed-note example is verifiable; the others published no keys, so
they are parsed for format, and the cosignature example's signed message is
rebuilt byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from lictor.errors import NoteError, SignatureError
from lictor.log import checkpoint, cosignature, note, tiles
from lictor.log.proof import parse_tlog_proof


@pytest.fixture(scope="module")
def c2sp(vectors: Path) -> Path:
    return vectors / "c2sp-spec-examples"


def test_signed_note_example_verifies(c2sp: Path) -> None:
    vkey = (c2sp / "signed-note-example.vkey").read_text().strip()
    verifier = note.parse_verifier_key(vkey)
    assert isinstance(verifier, note.Ed25519Verifier)
    public = base64.b64decode(vkey.split("+", 2)[2])
    assert public[0] == 0x01 and len(public) == 33
    assert hashlib.sha256(b"example.com/foo\n" + public).digest()[:4] == bytes.fromhex("530d903a")
    assert verifier.key_id == 0x530D903A
    data = (c2sp / "signed-note-example.note").read_bytes()
    opened = note.open_note(data, [verifier])
    assert opened.text == "This is an example message.\n"
    (sig,) = opened.verified
    assert len(sig.signature) == 64
    assert verifier.verify(b"This is an example message.\n", sig.signature)
    with pytest.raises(SignatureError):
        note.open_note(data.replace(b"example message", b"example massage"), [verifier])


def test_intro_note_splits_at_the_last_blank_line(c2sp: Path) -> None:
    parsed = note.parse_note((c2sp / "signed-note-intro-unverifiable.note").read_bytes())
    assert parsed.text == (
        "Ognuno sta solo sul cuor della terra\n"
        "trafitto da un raggio di sole:\n"
        "\n"
        "ed è subito sera.\n"
    )
    (sig,) = parsed.signatures
    assert (sig.name, len(sig.signature)) == ("quasimodo.example/salvatore", 64)
    stranger = note.Ed25519Signer("quasimodo.example/salvatore", bytes(32)).verifier
    with pytest.raises(SignatureError):
        note.open_note((c2sp / "signed-note-intro-unverifiable.note").read_bytes(), [stranger])


def test_checkpoint_example(c2sp: Path) -> None:
    parsed = note.parse_note((c2sp / "tlog-checkpoint-example-unverifiable.note").read_bytes())
    cp = checkpoint.parse_checkpoint(parsed.text)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.text() == parsed.text
    assert [s.name for s in parsed.signatures] == ["example.com/behind-the-sofa"]


def test_cosignature_example_and_its_signed_message(c2sp: Path) -> None:
    parsed = note.parse_note((c2sp / "tlog-cosignature-example-unverifiable.note").read_bytes())
    log_sig, cosig = parsed.signatures
    assert len(log_sig.signature) == 64
    assert (cosig.name, cosig.key_id, len(cosig.signature)) == (
        "witness.example.com/w1",
        0x8D66CF3F,
        72,
    )
    timestamp = cosignature.cosignature_time(cosig)
    assert timestamp == 1679315147
    message = (c2sp / "tlog-cosignature-ed25519-signed-message.txt").read_bytes()
    assert cosignature.cosignature_message(parsed.text, timestamp) == message
    # The note text and checkpoint are those of the plain checkpoint example.
    plain = note.parse_note((c2sp / "tlog-checkpoint-example-unverifiable.note").read_bytes())
    assert parsed.text == plain.text


def test_add_checkpoint_request_carries_a_parsable_checkpoint(c2sp: Path) -> None:
    body = (c2sp / "tlog-witness-add-checkpoint-request-unverifiable.txt").read_text()
    head, _, signed = body.partition("\n\n")
    old_line, *proof_lines = head.split("\n")
    assert old_line == "old 20852014"
    assert [len(base64.b64decode(h, validate=True)) for h in proof_lines] == [32] * 4
    parsed = note.parse_note(signed.encode())
    cp = checkpoint.parse_checkpoint(parsed.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert len(parsed.signatures) == 2


def test_tlog_proof_example(c2sp: Path) -> None:
    text = (c2sp / "tlog-proof-example-elided.tlog-proof").read_text()
    proof = parse_tlog_proof(text)
    assert proof.index == 73894
    assert len(proof.hashes) == 5 and all(len(h) == 32 for h in proof.hashes)
    assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert proof.encode() == text
    # The spec elides the signatures ("hI2DJw[...]1roloI="), so the embedded
    # note is malformed; its checkpoint body still parses.
    with pytest.raises(NoteError):
        note.parse_note(proof.checkpoint)
    body = proof.checkpoint.decode().partition("\n\n")[0] + "\n"
    cp = checkpoint.parse_checkpoint(body)
    assert (cp.origin, cp.size) == ("example.com/fancylog", 109482)


def test_tlog_tiles_worked_example(c2sp: Path) -> None:
    example = json.loads((c2sp / "examples.json").read_text())["tlog_tiles_worked_example"]
    want = example["expected"]
    all_tiles = tiles.tiles_for_size(example["tree_size"])

    def full(level: int) -> int:
        return sum(1 for t in all_tiles if t.level == level and not t.is_partial)

    def partial(level: int) -> list[int]:
        return [t.width for t in all_tiles if t.level == level and t.is_partial]

    assert full(0) == want["full_level0_tiles"] == 273
    assert partial(0) == [want["partial_level0_width"]]
    assert full(1) == want["full_level1_tiles"]
    assert partial(1) == [want["partial_level1_width"]]
    assert full(2) == 0 and partial(2) == [want["partial_level2_width"]]
    assert max(t.level for t in all_tiles) == 2

    small = tiles.tiles_for_size(256)
    assert small == [
        tiles.Tile(0, 0),
        tiles.Tile(1, 0, example["tree_size_256"]["partial_level1_width"]),
    ]
    assert example["tree_size_256"]["full_level0_tiles"] == 1

    index = example["index_path_example"]
    assert tiles.format_index(index["N"]) == index["path_element"]
    assert tiles.parse_index(index["path_element"].split("/")) == (index["N"], tiles.TILE_WIDTH)
