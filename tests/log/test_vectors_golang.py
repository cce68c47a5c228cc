"""Go's golang.org/x/mod/sumdb vectors (note and tlog) and a production
sum.golang.org checkpoint.

Not run: the sumdb tile paths (`tile/<H>/<L>/<N>`, `tile/<H>/data/<N>`) and
the height-10 `NewTiles` counts, which are Go sumdb layout, not C2SP tlog-tiles;
we only check that the C2SP parser does not mistake those paths for its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lictor.errors import CheckpointError, KeyFormatError, NoteError, SignatureError, TileError
from lictor.log import checkpoint, merkle, note, tiles


@pytest.fixture(scope="module")
def nv(vectors: Path) -> dict[str, Any]:
    path = vectors / "golang-mod-sumdb" / "note_vectors.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="module")
def peter(nv: dict[str, Any]) -> note.Verifier:
    return note.parse_verifier_key(nv["keys"]["PeterNeumann"]["vkey"])


@pytest.fixture(scope="module")
def enoch(nv: dict[str, Any]) -> note.Verifier:
    return note.parse_verifier_key(nv["keys"]["EnochRoot"]["vkey"])


def test_resigning_with_the_skey_is_byte_identical(nv: dict[str, Any]) -> None:
    signer = note.parse_signer_key(nv["keys"]["PeterNeumann"]["skey"])
    assert signer.verifier.vkey() == nv["keys"]["PeterNeumann"]["vkey"]
    assert signer.skey() == nv["keys"]["PeterNeumann"]["skey"]
    signed = note.sign_note(nv["text"], [signer])
    assert (
        signed.decode() == nv["expected"]["sign_with_peter_skey_yields"] == nv["signed_note_peter"]
    )
    assert signed.decode() == nv["text"] + "\n" + nv["signatures"]["PeterNeumann"]


def test_enoch_has_the_zero_seed(nv: dict[str, Any]) -> None:
    seed = bytes.fromhex(nv["keys"]["EnochRoot"]["seed_hex"])
    enoch_signer = note.Ed25519Signer("EnochRoot", seed)
    assert enoch_signer.verifier.vkey() == nv["keys"]["EnochRoot"]["vkey"]
    peter = note.parse_signer_key(nv["keys"]["PeterNeumann"]["skey"])
    both = note.sign_note(nv["text"], [peter, enoch_signer])
    assert both.decode() == nv["signed_note_peter_enoch"]


def _names(sigs: tuple[note.Signature, ...]) -> list[str]:
    return [s.name for s in sigs]


def test_open(nv: dict[str, Any], peter: note.Verifier, enoch: note.Verifier) -> None:
    data = nv["signed_note_peter_enoch"].encode()
    for verifiers, key in [
        ([peter], "open_with_[peter]"),
        ([peter, enoch], "open_with_[peter,enoch]"),
    ]:
        opened = note.open_note(data, verifiers)
        assert opened.text == nv["text"]
        assert _names(opened.verified) == nv["expected"][key]["verified"]
        assert _names(opened.unverified) == nv["expected"][key]["unverified"]
    assert nv["expected"]["open_with_[]"].startswith("error")
    with pytest.raises(SignatureError):
        note.open_note(data, [])


def test_101_signatures_are_malformed(nv: dict[str, Any], peter: note.Verifier) -> None:
    assert nv["expected"]["101_copies_of_peter_sig"].startswith("error")
    sig = nv["signatures"]["PeterNeumann"]
    with pytest.raises(NoteError) as info:
        note.open_note((nv["text"] + "\n" + sig * 101).encode(), [peter])
    assert not isinstance(info.value, SignatureError)
    opened = note.open_note((nv["text"] + "\n" + sig * 100).encode(), [peter])
    assert _names(opened.verified) == ["PeterNeumann"]


def test_invalid_vkeys(nv: dict[str, Any]) -> None:
    assert len(nv["invalid_vkeys"]) == 2
    for case in nv["invalid_vkeys"]:
        with pytest.raises(KeyFormatError):
            note.parse_verifier_key(case["vkey"])


def test_malformed_notes(nv: dict[str, Any], peter: note.Verifier) -> None:
    assert len(nv["malformed_notes"]) == 7
    for case in nv["malformed_notes"]:
        data = case["msg"].encode() if "msg" in case else bytes.fromhex(case["msg_hex"])
        with pytest.raises(NoteError) as info:
            note.open_note(data, [peter])
        assert type(info.value) is NoteError, case["why"]


def test_corrupted_known_signature_rejects_the_note(
    nv: dict[str, Any], peter: note.Verifier, enoch: note.Verifier
) -> None:
    bad = nv["invalid_signature_note"]
    assert bad["verifiers"] == ["PeterNeumann"]
    with pytest.raises(SignatureError, match="PeterNeumann"):
        note.open_note(bad["msg"].encode(), [peter])
    # Even a good signature from another trusted key does not save the note.
    with_enoch = bad["msg"] + nv["signatures"]["EnochRoot"]
    assert _names(note.open_note(with_enoch.encode(), [enoch]).verified) == ["EnochRoot"]
    with pytest.raises(SignatureError):
        note.open_note(with_enoch.encode(), [peter, enoch])


@pytest.fixture(scope="module")
def tv(vectors: Path) -> dict[str, Any]:
    path = vectors / "golang-mod-sumdb" / "tlog_vectors.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_sumdb_tree_note(tv: dict[str, Any]) -> None:
    v = tv["tree_note_text"]
    parsed = checkpoint.parse_checkpoint(v["formatted"])
    assert parsed.origin == "go.sum database tree"
    assert parsed.size == v["tree_size"] == 123456789012
    # RecordHash is the RFC 6962 leaf hash.
    assert parsed.root == merkle.leaf_hash(v["hash_is_record_hash_of"].encode())
    assert parsed.text() == v["formatted"]


def test_sumdb_tile_paths_are_not_c2sp(tv: dict[str, Any]) -> None:
    paths = tv["sumdb_tile_path_fuzz_seeds_NOT_C2SP"]
    assert len(paths) == 8
    for path in paths:
        with pytest.raises(TileError):
            tiles.parse_tile_path(path)


def test_sum_golang_org_checkpoint(vectors: Path) -> None:
    folder = vectors / "real-world-checkpoints"
    verifier = note.parse_verifier_key((folder / "sum.golang.org.vkey").read_text())
    assert (verifier.name, verifier.key_id) == ("sum.golang.org", 0x033DE0AE)
    data = (folder / "sum.golang.org-35225469.note").read_bytes()
    cp, opened = checkpoint.open_checkpoint(data, [verifier], origin="go.sum database tree")
    # The key name differs from the origin line.
    assert (cp.origin, cp.size) == ("go.sum database tree", 35225469)
    assert _names(opened.verified) == ["sum.golang.org"]
    with pytest.raises(CheckpointError):
        checkpoint.open_checkpoint(data, [verifier], origin="sum.golang.org")
    tampered = data.replace(b"35225469", b"35225470")
    with pytest.raises(SignatureError):
        checkpoint.open_checkpoint(tampered, [verifier])
